#include "protocols/lock_commands.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "protocols/cbor.hpp"
#include "protocols/cloud_messages.hpp"
#include "protocols/json_input.hpp"

namespace lockbridge::protocol {

namespace {

using json = nlohmann::json;

constexpr std::string_view command_schema = "lockbridge/lock-command/1";

std::optional<lock_op> op_of(std::string_view s) {
  if (s == "unlock")
    return lock_op::unlock;
  if (s == "lock")
    return lock_op::lock;
  if (s == "passage_on")
    return lock_op::passage_on;
  if (s == "passage_off")
    return lock_op::passage_off;
  return std::nullopt;
}

/// The fields a command has wherever it comes from; `where` names the format.
result<lock_command> fields_of(const json& doc, bool with_lock) {
  if (!doc.is_object())
    return input_error{"", std::string{"expected a map, got "} + doc.type_name()};
  for (const auto& [key, value] : doc.items()) {
    static const std::vector<std::string> known{"schema", "id", "lock", "op", "duration",
                                                "expires_at"};
    if (std::find(known.begin(), known.end(), key) == known.end()
        || (!with_lock && (key == "lock" || key == "schema")))
      return input_error{key, "unknown field; expected " + std::string{with_lock
                                ? "schema, id, lock, op, duration, expires_at"
                                : "id, op, duration, expires_at"}};
  }
  lock_command c;
  auto text = [&](const char* key, std::string& out) -> std::optional<input_error> {
    auto it = doc.find(key);
    if (it == doc.end())
      return input_error{key, "missing; expected a string"};
    if (!it->is_string())
      return input_error{key, std::string{"expected a string, got "} + it->type_name()};
    out = it->get<std::string>();
    if (!is_valid_id(out))
      return input_error{key, "expected 1-64 of A-Z a-z 0-9 _ -"};
    return std::nullopt;
  };
  if (auto e = text("id", c.id))
    return *e;
  if (with_lock)
    if (auto e = text("lock", c.lock))
      return *e;
  auto op = doc.find("op");
  if (op == doc.end() || !op->is_string())
    return input_error{"op", "missing or not a string; expected unlock, lock, passage_on or "
                             "passage_off"};
  auto parsed = op_of(op->get<std::string>());
  if (!parsed)
    return input_error{"op", "expected unlock, lock, passage_on or passage_off"};
  c.op = *parsed;
  if (auto d = doc.find("duration"); d != doc.end()) {
    if (c.op != lock_op::unlock)
      return input_error{"duration", "only an unlock has a duration"};
    if (!d->is_number_unsigned() || d->get<std::uint64_t>() == 0
        || d->get<std::uint64_t>() > lock_command_limits::max_duration_s)
      return input_error{"duration", "expected whole seconds from 1 to "
                                       + std::to_string(lock_command_limits::max_duration_s)};
    c.duration_s = d->get<std::uint32_t>();
  }
  auto e = doc.find("expires_at");
  if (e == doc.end() || !e->is_number_unsigned() || e->get<std::uint64_t>() == 0)
    return input_error{"expires_at", "missing or not a positive integer; expected Unix ms"};
  // Checked before it becomes a signed number that arithmetic uses.
  if (e->get<std::uint64_t>() > lock_command_limits::max_expires_at_ms)
    return input_error{"expires_at", "beyond the year 9999; expected Unix milliseconds"};
  c.expires_at = static_cast<std::int64_t>(e->get<std::uint64_t>());
  return c;
}

/// Parses a lock's CBOR into nlohmann's DOM, only after its shape is known to
/// be safe for it (no absurd counts, no deep nesting, valid text, unique
/// keys): a lock's bytes never throw, recurse or carry text dump() refuses.
/// The protocol's messages are flat maps; one more level is allowed so that a
/// misplaced array or map gets its field's own error.
result<json> parse_lock_cbor(std::span<const std::uint8_t> cbor, std::size_t max_bytes) {
  if (cbor.size() > max_bytes)
    return too_large("payload", cbor.size(), max_bytes);
  if (auto problem = cbor::check_shape(cbor, 2))
    return input_error{"", *problem};
  auto doc = json::from_cbor(cbor.begin(), cbor.end(), true, false);
  if (doc.is_discarded())
    return input_error{"", "not valid CBOR"};
  if (!doc.is_object())
    return input_error{"", std::string{"expected a map, got "} + doc.type_name()};
  return doc;
}

} // namespace

std::string_view to_string(lock_op op) noexcept {
  switch (op) {
  case lock_op::unlock: return "unlock";
  case lock_op::lock: return "lock";
  case lock_op::passage_on: return "passage_on";
  case lock_op::passage_off: return "passage_off";
  }
  return "?";
}

result<lock_command> decode_lock_command(std::string_view text) {
  auto parsed = parse_json_input(text, lock_command_limits::max_message_bytes, 4);
  if (!parsed)
    return parsed.error();
  const auto& doc = *parsed;
  auto schema = doc.find("schema");
  if (schema == doc.end() || !schema->is_string() || *schema != command_schema)
    return input_error{"schema", "expected \"" + std::string{command_schema} + "\""};
  return fields_of(doc, true);
}

std::vector<std::uint8_t> encode_lock_request(const lock_command& c) {
  json doc{{"id", c.id}, {"op", to_string(c.op)}, {"expires_at", c.expires_at}};
  if (c.duration_s)
    doc["duration"] = *c.duration_s;
  return json::to_cbor(doc);
}

result<lock_command> decode_lock_request(std::span<const std::uint8_t> cbor) {
  auto doc = parse_lock_cbor(cbor, lock_command_limits::max_message_bytes);
  if (!doc)
    return doc.error();
  return fields_of(*doc, false);
}

std::vector<std::uint8_t> encode_lock_answer(const lock_answer& a) {
  json doc{{"id", a.id}, {"result", a.result}};
  if (a.detail)
    doc["detail"] = *a.detail;
  return json::to_cbor(doc);
}

result<lock_answer> decode_lock_answer(std::span<const std::uint8_t> cbor) {
  auto parsed = parse_lock_cbor(cbor, lock_command_limits::max_message_bytes);
  if (!parsed)
    return parsed.error();
  const auto& doc = *parsed;
  lock_answer a;
  auto id = doc.find("id");
  auto res = doc.find("result");
  if (id == doc.end() || !id->is_string())
    return input_error{"id", "missing or not a string"};
  if (res == doc.end() || !res->is_string()
      || (*res != "done" && *res != "refused" && *res != "failed"))
    return input_error{"result", "expected done, refused or failed"};
  a.id = id->get<std::string>();
  a.result = res->get<std::string>();
  if (auto d = doc.find("detail"); d != doc.end()) {
    if (!d->is_string() || d->get_ref<const std::string&>().size() > 256
        || !cbor::is_valid_utf8(d->get_ref<const std::string&>())
        || std::any_of(d->get_ref<const std::string&>().begin(),
                       d->get_ref<const std::string&>().end(),
                       [](char ch) { return static_cast<unsigned char>(ch) < 0x20; }))
      return input_error{"detail", "expected printable UTF-8 text of at most 256 bytes"};
    a.detail = d->get<std::string>();
  }
  for (const auto& [key, value] : doc.items())
    if (key != "id" && key != "result" && key != "detail")
      return input_error{key, "unknown field; expected id, result, detail"};
  return a;
}

std::vector<std::uint8_t> encode_lock_state(const lock_state& s) {
  return json::to_cbor(
    json{{"locked", s.locked}, {"door_open", s.door_open}, {"battery", s.battery}, {"fw", s.fw}});
}

result<lock_state> decode_lock_state(std::span<const std::uint8_t> cbor) {
  auto parsed = parse_lock_cbor(cbor, 512);
  if (!parsed)
    return parsed.error();
  const auto& doc = *parsed;
  for (const auto& [key, value] : doc.items())
    if (key != "locked" && key != "door_open" && key != "battery" && key != "fw")
      return input_error{key, "unknown field; expected locked, door_open, battery, fw"};
  lock_state s;
  for (auto [key, flag] : {std::pair{"locked", &s.locked}, std::pair{"door_open", &s.door_open}}) {
    auto it = doc.find(key);
    if (it == doc.end() || !it->is_boolean())
      return input_error{key, "missing or not true/false"};
    *flag = it->get<bool>();
  }
  auto battery = doc.find("battery");
  if (battery == doc.end() || !battery->is_number_unsigned() || battery->get<std::uint64_t>() > 100)
    return input_error{"battery", "expected a percentage from 0 to 100"};
  s.battery = battery->get<std::uint32_t>();
  auto fw = doc.find("fw");
  if (fw == doc.end() || !fw->is_string() || fw->get_ref<const std::string&>().empty()
      || fw->get_ref<const std::string&>().size() > 32
      || !std::all_of(fw->get_ref<const std::string&>().begin(),
                      fw->get_ref<const std::string&>().end(),
                      [](char c) { return c > 0x20 && c < 0x7f; }))
    return input_error{"fw", "expected 1-32 printable ASCII characters"};
  s.fw = fw->get<std::string>();
  return s;
}

} // namespace lockbridge::protocol
