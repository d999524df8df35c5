#include "protocols/json_input.hpp"

#include <algorithm>
#include <vector>

namespace lockbridge::protocol {

namespace {

using nlohmann::json;

/// Thrown by the parse callback to stop at the first problem; caught below.
struct stop_parsing {
  input_error error;
};

} // namespace

namespace {

/// Parses with a callback that bounds the depth and counts each object's
/// keys: an object that ends with fewer members than keys were read had one
/// twice (nlohmann keeps the last). `name_duplicates` also keeps the keys, to
/// name the repeated one; that costs a copy of every key, so it is only used
/// once a repetition is known to be there.
result<json> parse_checked(std::string_view text, std::size_t max_depth, bool name_duplicates) {
  std::vector<std::size_t> counts;
  std::vector<std::vector<std::string>> names;
  auto check = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
    case json::parse_event_t::object_start:
    case json::parse_event_t::array_start:
      if (static_cast<std::size_t>(depth) >= max_depth)
        throw stop_parsing{{"", "arrays and objects nested more than " + std::to_string(max_depth)
                                  + " deep"}};
      if (event == json::parse_event_t::object_start) {
        counts.push_back(0);
        if (name_duplicates)
          names.emplace_back();
      }
      break;
    case json::parse_event_t::key:
      ++counts.back();
      if (name_duplicates) {
        auto& keys = names.back();
        const auto& key = parsed.get_ref<const std::string&>();
        if (std::find(keys.begin(), keys.end(), key) != keys.end())
          throw stop_parsing{{key, "appears twice in one object; each key may appear once"}};
        keys.push_back(key);
      }
      break;
    case json::parse_event_t::object_end:
      if (parsed.size() != counts.back())
        throw stop_parsing{{"", "a key appears twice in one object; each key may appear once"}};
      counts.pop_back();
      if (name_duplicates)
        names.pop_back();
      break;
    default:
      break;
    }
    return true;
  };
  json doc;
  try {
    doc = json::parse(text, check, false);
  } catch (const stop_parsing& stop) {
    return stop.error;
  } catch (const std::exception& e) {
    return input_error{"", std::string{"not usable JSON: "} + e.what()};
  }
  if (doc.is_discarded())
    return input_error{"", "not valid JSON"};
  if (!doc.is_object())
    return input_error{"", std::string{"expected a JSON object, got "} + doc.type_name()};
  return doc;
}

} // namespace

result<json> parse_json_input(std::string_view text, std::size_t max_bytes,
                              std::size_t max_depth) {
  if (text.size() > max_bytes)
    return too_large("message", text.size(), max_bytes);
  auto doc = parse_checked(text, max_depth, false);
  if (!doc && doc.error().message.starts_with("a key appears twice"))
    return parse_checked(text, max_depth, true); // again, to name it
  return doc;
}

std::string dump_safe(const json& doc) {
  return doc.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) noexcept {
  if (text.size() <= max_bytes)
    return text;
  auto end = max_bytes;
  // Step back over continuation bytes to the start of the cut sequence.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80)
    --end;
  return text.substr(0, end);
}

} // namespace lockbridge::protocol
