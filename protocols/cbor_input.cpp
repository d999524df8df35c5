#include "protocols/cbor_input.hpp"

#include <string>

namespace lockbridge::protocol {

namespace {

/// A SAX consumer that only measures nesting and stops at the limit.
class depth_guard : public nlohmann::json_sax<nlohmann::json> {
public:
  explicit depth_guard(std::size_t max_depth) : max_depth_(max_depth) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return enter(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return leave(); }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override { return leave(); }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception&) override {
    error_position_ = position;
    return false;
  }

  bool too_deep() const noexcept { return too_deep_; }
  std::size_t error_position() const noexcept { return error_position_; }

private:
  bool enter() {
    if (++depth_ > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }
  bool leave() {
    --depth_;
    return true;
  }

  std::size_t max_depth_;
  std::size_t depth_ = 0;
  bool too_deep_ = false;
  std::size_t error_position_ = 0;
};

} // namespace

result<nlohmann::json> parse_cbor(std::span<const std::uint8_t> payload,
                                  std::size_t max_depth) {
  if (payload.empty())
    return input_error{"", "empty payload; expected a CBOR map"};
  depth_guard guard{max_depth};
  bool ok = nlohmann::json::sax_parse(payload.begin(), payload.end(), &guard,
                                      nlohmann::json::input_format_t::cbor,
                                      true);
  if (guard.too_deep())
    return input_error{"", "CBOR nested deeper than " + std::to_string(max_depth)
                             + " levels"};
  if (!ok)
    return input_error{"", "malformed CBOR (truncated or invalid at byte "
                             + std::to_string(guard.error_position()) + ")"};
  auto value = nlohmann::json::from_cbor(payload.begin(), payload.end(), true,
                                         false);
  if (value.is_discarded())
    return input_error{"", "malformed CBOR"};
  return value;
}

result<std::uint64_t> get_unsigned(const nlohmann::json& obj, const char* key,
                                   const std::string& path) {
  auto it = obj.find(key);
  auto field = path.empty() ? std::string{key} : path + "." + key;
  if (it == obj.end())
    return input_error{field, "missing; expected an unsigned integer"};
  if (!it->is_number_unsigned())
    return input_error{field, std::string{"expected an unsigned integer, got "}
                                + it->type_name()};
  return it->get<std::uint64_t>();
}

} // namespace lockbridge::protocol
