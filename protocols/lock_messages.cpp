#include "protocols/lock_messages.hpp"

#include <algorithm>
#include <string_view>

#include "protocols/cbor.hpp"

namespace lockbridge::protocol {

namespace {

using cbor::major;

bool is_token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
         || c == '_' || c == '-' || c == '.';
}

std::string got(const cbor::head& h) {
  return ", got " + std::string{h.type_name()};
}

/// Decodes lock messages from a CBOR reader, one item at a time, in the
/// order the lock wrote them; the first problem found is the answer.
class decoder {
public:
  explicit decoder(std::span<const std::uint8_t> payload) : in_(payload) {}

  input_error malformed() const {
    return {"", "malformed CBOR (truncated or invalid at byte " + std::to_string(in_.position())
                  + ")"};
  }

  /// The head of a map or array; count = entries or items (nullopt: indefinite).
  result<cbor::head> head() {
    auto h = in_.next();
    if (!h)
      return malformed();
    return *h;
  }

  /// Calls `entry(key)` for each entry of the map whose head was just read;
  /// `entry` must consume the value.
  template <class Path, class F>
  std::optional<input_error> each_entry(const cbor::head& map, const Path& path, F&& entry) {
    for (std::uint64_t i = 0; map.indefinite || i < map.argument; ++i) {
      if (map.indefinite && in_.take_break())
        break;
      auto key = head();
      if (!key)
        return key.error();
      if (key->type != major::text_string)
        return input_error{path(), "map keys must be text strings" + got(*key)};
      auto text = in_.text(*key);
      if (!text)
        return malformed();
      if (auto err = entry(*text))
        return err;
    }
    return std::nullopt;
  }

  /// Reads a text value for `field`.
  template <class Field>
  result<std::string> text(const Field& field, std::size_t max_length, bool token_only) {
    auto h = head();
    if (!h)
      return h.error();
    if (h->type != major::text_string)
      return input_error{field(), "expected a text string" + got(*h)};
    auto value = in_.text(*h);
    if (!value)
      return malformed();
    if (value->empty() || value->size() > max_length)
      return input_error{field(), "expected 1 to " + std::to_string(max_length) + " bytes, got "
                                  + std::to_string(value->size())};
    if (token_only && !std::all_of(value->begin(), value->end(), is_token_char))
      return input_error{field(), "expected only letters, digits, '_', '-' and '.'"};
    if (!cbor::is_valid_utf8(*value))
      return input_error{field(), "expected valid UTF-8"};
    return std::string{*value};
  }

  /// The event at `index` of the batch. Field paths ("events[3].door") are
  /// only spelled out when there is something to report.
  result<lock_event> event(std::uint64_t index) {
    auto path = [index] { return "events[" + std::to_string(index) + "]"; };
    auto map = head();
    if (!map)
      return map.error();
    if (map->type != major::map)
      return input_error{path(), "expected a map" + got(*map)};
    lock_event ev;
    bool has_seq = false, has_ts = false;
    auto err = each_entry(*map, path, [&](std::string_view key) -> std::optional<input_error> {
      auto field = [&] { return path() + "." + std::string{key}; };
      auto duplicate = [&](bool seen) -> std::optional<input_error> {
        if (seen)
          return input_error{field(), "appears twice; each field may appear once"};
        return std::nullopt;
      };
      if (key == "seq") {
        if (auto e = duplicate(has_seq))
          return e;
        auto h = head();
        if (!h)
          return h.error();
        if (h->type != major::unsigned_integer)
          return input_error{field(), "expected an unsigned integer" + got(*h)};
        if (h->argument == 0)
          return input_error{field(), "expected a sequence number of 1 or more"};
        ev.seq = h->argument;
        has_seq = true;
      } else if (key == "ts") {
        if (auto e = duplicate(has_ts))
          return e;
        auto h = head();
        if (!h)
          return h.error();
        if (h->type == major::negative_integer)
          return input_error{field(), "expected Unix milliseconds after 1970"};
        if (h->type != major::unsigned_integer)
          return input_error{field(), "expected an integer" + got(*h)};
        if (h->argument == 0)
          return input_error{field(), "expected Unix milliseconds after 1970"};
        if (h->argument > INT64_MAX)
          return input_error{field(), "out of range"};
        ev.ts = static_cast<std::int64_t>(h->argument);
        has_ts = true;
      } else if (key == "type" || key == "door") {
        auto& target = key == "type" ? ev.type : ev.door;
        if (auto e = duplicate(!target.empty()))
          return e;
        auto value = text(field, key == "type" ? lock_limits::max_type_length
                                               : lock_limits::max_door_length,
                          true);
        if (!value)
          return value.error();
        target = std::move(*value);
      } else if (key == "cred" || key == "detail") {
        auto& target = key == "cred" ? ev.cred : ev.detail;
        if (auto e = duplicate(target.has_value()))
          return e;
        auto value = text(field, key == "cred" ? lock_limits::max_cred_length
                                               : lock_limits::max_detail_length,
                          false);
        if (!value)
          return value.error();
        target = std::move(*value);
      } else {
        return input_error{field(), "unknown field; expected seq, ts, type, door, cred, detail"};
      }
      return std::nullopt;
    });
    if (err)
      return *err;
    if (!has_seq)
      return input_error{path() + ".seq", "missing; expected an unsigned integer"};
    if (!has_ts)
      return input_error{path() + ".ts", "missing; expected Unix milliseconds"};
    if (ev.type.empty())
      return input_error{path() + ".type", "missing; expected a text string"};
    if (ev.door.empty())
      return input_error{path() + ".door", "missing; expected a text string"};
    return ev;
  }

  result<event_batch> batch() {
    auto map = head();
    if (!map)
      return map.error();
    if (map->type != major::map)
      return input_error{"", "expected a CBOR map" + got(*map)};
    event_batch out;
    bool has_events = false;
    auto top = [] { return std::string{}; };
    auto err = each_entry(*map, top, [&](std::string_view key) -> std::optional<input_error> {
      if (key != "events")
        return input_error{std::string{key}, "unknown field; expected only events"};
      if (has_events)
        return input_error{"events", "appears twice; each field may appear once"};
      has_events = true;
      auto array = head();
      if (!array)
        return array.error();
      if (array->type != major::array)
        return input_error{"events", "expected an array" + got(*array)};
      if (!array->indefinite && array->argument > lock_limits::max_events_per_batch)
        return too_many(array->argument);
      for (std::uint64_t i = 0; array->indefinite || i < array->argument; ++i) {
        if (array->indefinite && in_.take_break())
          break;
        if (i >= lock_limits::max_events_per_batch)
          return too_many(i + 1);
        auto ev = event(i);
        if (!ev)
          return ev.error();
        if (!out.events.empty() && ev->seq <= out.events.back().seq)
          return input_error{"events[" + std::to_string(i) + "].seq", "seq " + std::to_string(ev->seq)
                                              + " does not rise above "
                                              + std::to_string(out.events.back().seq)
                                              + "; events must be in strictly rising seq order"};
        out.events.push_back(std::move(*ev));
      }
      if (out.events.empty())
        return input_error{"events", "expected at least one event"};
      return std::nullopt;
    });
    if (err)
      return *err;
    if (!has_events)
      return input_error{"events", "missing; expected an array of events"};
    if (!in_.at_end())
      return input_error{"", "unexpected bytes after the CBOR map (from byte "
                               + std::to_string(in_.position()) + ")"};
    return out;
  }

  result<std::uint64_t> ack() {
    auto map = head();
    if (!map)
      return map.error();
    if (map->type != major::map)
      return input_error{"", "expected a CBOR map" + got(*map)};
    std::optional<std::uint64_t> acked;
    auto top = [] { return std::string{}; };
    auto err = each_entry(*map, top, [&](std::string_view key) -> std::optional<input_error> {
      auto h = head();
      if (!h)
        return h.error();
      if (key != "acked_seq")
        return input_error{std::string{key}, "unknown field; expected only acked_seq"};
      if (h->type != major::unsigned_integer)
        return input_error{"acked_seq", "expected an unsigned integer" + got(*h)};
      acked = h->argument;
      return std::nullopt;
    });
    if (err)
      return *err;
    if (!acked)
      return input_error{"acked_seq", "missing; expected an unsigned integer"};
    return *acked;
  }

private:
  static input_error too_many(std::uint64_t count) {
    return {"events", "batch of " + std::to_string(count) + " events exceeds the limit of "
                        + std::to_string(lock_limits::max_events_per_batch)};
  }

  cbor::reader in_;
};

} // namespace

result<event_batch> decode_event_batch(std::span<const std::uint8_t> payload) {
  if (payload.empty())
    return input_error{"", "empty payload; expected a CBOR map"};
  if (payload.size() > lock_limits::max_payload_bytes)
    return too_large("payload", payload.size(), lock_limits::max_payload_bytes);
  return decoder{payload}.batch();
}

std::vector<std::uint8_t> encode_event_batch(const event_batch& batch) {
  std::vector<std::uint8_t> out;
  out.reserve(16 + batch.events.size() * 96);
  cbor::writer w{out};
  w.map(1);
  w.text("events");
  w.array(batch.events.size());
  for (const auto& ev : batch.events) {
    w.map(4 + (ev.cred ? 1 : 0) + (ev.detail ? 1 : 0));
    w.text("seq");
    w.unsigned_integer(ev.seq);
    w.text("ts");
    w.integer(ev.ts);
    w.text("type");
    w.text(ev.type);
    w.text("door");
    w.text(ev.door);
    if (ev.cred) {
      w.text("cred");
      w.text(*ev.cred);
    }
    if (ev.detail) {
      w.text("detail");
      w.text(*ev.detail);
    }
  }
  return out;
}

std::vector<std::uint8_t> encode_events_ack(std::uint64_t acked_seq) {
  std::vector<std::uint8_t> out;
  cbor::writer w{out};
  w.map(1);
  w.text("acked_seq");
  w.unsigned_integer(acked_seq);
  return out;
}

result<std::uint64_t> decode_events_ack(std::span<const std::uint8_t> payload) {
  if (payload.empty())
    return input_error{"", "empty acknowledgement; expected a CBOR map"};
  if (payload.size() > 256)
    return input_error{"", "acknowledgement larger than 256 bytes"};
  return decoder{payload}.ack();
}

std::vector<std::uint8_t> encode_time(std::int64_t now_ms) {
  std::vector<std::uint8_t> out;
  cbor::writer w{out};
  w.map(1);
  w.text("now");
  w.integer(now_ms);
  return out;
}

} // namespace lockbridge::protocol
