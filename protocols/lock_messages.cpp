#include "protocols/lock_messages.hpp"

#include <algorithm>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "protocols/cbor_input.hpp"

namespace lockbridge::protocol {

namespace {

using nlohmann::json;

constexpr std::size_t max_depth = 4; // map > array > event map > nothing deeper

bool is_token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
         || c == '_' || c == '-' || c == '.';
}

/// Reads a text member; `required` decides whether absence is an error.
result<std::optional<std::string>> get_text(const json& obj, const char* key,
                                            const std::string& path,
                                            std::size_t max_length, bool required,
                                            bool token_only) {
  auto field = path + "." + key;
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required)
      return input_error{field, "missing; expected a text string"};
    return std::optional<std::string>{};
  }
  if (!it->is_string())
    return input_error{field, std::string{"expected a text string, got "}
                                + it->type_name()};
  const auto& text = it->get_ref<const std::string&>();
  if (text.empty() || text.size() > max_length)
    return input_error{field, "expected 1 to " + std::to_string(max_length)
                                + " bytes, got " + std::to_string(text.size())};
  if (token_only && !std::all_of(text.begin(), text.end(), is_token_char))
    return input_error{field, "expected only letters, digits, '_', '-' and '.'"};
  return std::optional<std::string>{text};
}

result<lock_event> decode_event(const json& item, const std::string& path) {
  if (!item.is_object())
    return input_error{path, std::string{"expected a map, got "} + item.type_name()};
  static const std::set<std::string_view> known{"seq", "ts",   "type",
                                                 "door", "cred", "detail"};
  for (const auto& [key, _] : item.items())
    if (!known.contains(key))
      return input_error{path + "." + key,
                         "unknown field; expected seq, ts, type, door, cred, detail"};
  lock_event ev;
  auto seq = get_unsigned(item, "seq", path);
  if (!seq)
    return seq.error();
  if (*seq == 0)
    return input_error{path + ".seq", "expected a sequence number of 1 or more"};
  ev.seq = *seq;
  auto ts_it = item.find("ts");
  if (ts_it == item.end())
    return input_error{path + ".ts", "missing; expected Unix milliseconds"};
  if (!ts_it->is_number_integer())
    return input_error{path + ".ts", std::string{"expected an integer, got "}
                                       + ts_it->type_name()};
  if (ts_it->is_number_unsigned() && ts_it->get<std::uint64_t>() > INT64_MAX)
    return input_error{path + ".ts", "out of range"};
  ev.ts = ts_it->get<std::int64_t>();
  if (ev.ts <= 0)
    return input_error{path + ".ts", "expected Unix milliseconds after 1970"};
  auto type = get_text(item, "type", path, lock_limits::max_type_length, true, true);
  if (!type)
    return type.error();
  ev.type = std::move(**type);
  auto door = get_text(item, "door", path, lock_limits::max_door_length, true, true);
  if (!door)
    return door.error();
  ev.door = std::move(**door);
  auto cred = get_text(item, "cred", path, lock_limits::max_cred_length, false, false);
  if (!cred)
    return cred.error();
  ev.cred = std::move(*cred);
  auto detail = get_text(item, "detail", path, lock_limits::max_detail_length,
                         false, false);
  if (!detail)
    return detail.error();
  ev.detail = std::move(*detail);
  return ev;
}

std::vector<std::uint8_t> to_cbor(const json& value) {
  return json::to_cbor(value);
}

} // namespace

result<event_batch> decode_event_batch(std::span<const std::uint8_t> payload) {
  if (payload.size() > lock_limits::max_payload_bytes)
    return input_error{"", "payload of " + std::to_string(payload.size())
                             + " bytes exceeds the limit of "
                             + std::to_string(lock_limits::max_payload_bytes)};
  auto doc = parse_cbor(payload, max_depth);
  if (!doc)
    return doc.error();
  if (!doc->is_object())
    return input_error{"", std::string{"expected a CBOR map, got "} + doc->type_name()};
  for (const auto& [key, _] : doc->items())
    if (key != "events")
      return input_error{key, "unknown field; expected only events"};
  auto it = doc->find("events");
  if (it == doc->end())
    return input_error{"events", "missing; expected an array of events"};
  if (!it->is_array())
    return input_error{"events", std::string{"expected an array, got "}
                                   + it->type_name()};
  if (it->empty())
    return input_error{"events", "expected at least one event"};
  if (it->size() > lock_limits::max_events_per_batch)
    return input_error{"events", "batch of " + std::to_string(it->size())
                                   + " events exceeds the limit of "
                                   + std::to_string(lock_limits::max_events_per_batch)};
  event_batch batch;
  batch.events.reserve(it->size());
  for (std::size_t i = 0; i < it->size(); ++i) {
    auto path = "events[" + std::to_string(i) + "]";
    auto ev = decode_event((*it)[i], path);
    if (!ev)
      return ev.error();
    if (!batch.events.empty() && ev->seq <= batch.events.back().seq)
      return input_error{path + ".seq",
                         "seq " + std::to_string(ev->seq) + " does not rise above "
                           + std::to_string(batch.events.back().seq)
                           + "; events must be in strictly rising seq order"};
    batch.events.push_back(std::move(*ev));
  }
  return batch;
}

std::vector<std::uint8_t> encode_event_batch(const event_batch& batch) {
  json events = json::array();
  for (const auto& ev : batch.events) {
    json item = {{"seq", ev.seq}, {"ts", ev.ts}, {"type", ev.type}, {"door", ev.door}};
    if (ev.cred)
      item["cred"] = *ev.cred;
    if (ev.detail)
      item["detail"] = *ev.detail;
    events.push_back(std::move(item));
  }
  return to_cbor(json{{"events", std::move(events)}});
}

std::vector<std::uint8_t> encode_events_ack(std::uint64_t acked_seq) {
  return to_cbor(json{{"acked_seq", acked_seq}});
}

result<std::uint64_t> decode_events_ack(std::span<const std::uint8_t> payload) {
  if (payload.size() > 256)
    return input_error{"", "acknowledgement larger than 256 bytes"};
  auto doc = parse_cbor(payload, 2);
  if (!doc)
    return doc.error();
  if (!doc->is_object())
    return input_error{"", "expected a CBOR map"};
  return get_unsigned(*doc, "acked_seq", "");
}

std::vector<std::uint8_t> encode_time(std::int64_t now_ms) {
  return to_cbor(json{{"now", now_ms}});
}

} // namespace lockbridge::protocol
