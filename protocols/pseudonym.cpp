#include "protocols/pseudonym.hpp"

#include <algorithm>
#include <string>

namespace lockbridge::protocol {

namespace {

/// Domain separation: the same key must never yield the same output for a
/// credential pseudonym and for any other use of HMAC in lockbridge.
constexpr std::string_view domain = "lockbridge/credential-pseudonym/v1";

} // namespace

std::string base64url(const std::uint8_t* data, std::size_t size) {
  static constexpr char alphabet[]
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((size * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= size; i += 3) {
    std::uint32_t v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (size - i == 1) {
    std::uint32_t v = data[i] << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
  } else if (size - i == 2) {
    std::uint32_t v = (data[i] << 16) | (data[i + 1] << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
  }
  return out;
}

pseudonymiser::pseudonymiser(const key_type& key, std::uint32_t epoch)
  : mac_(key, domain), epoch_(epoch) {}

std::string pseudonymiser::operator()(std::string_view identifier) const {
  auto mac = mac_(identifier);
  return "p1." + std::to_string(epoch_) + "." + base64url(mac.data(), mac.size());
}

bool is_pseudonym(std::string_view text) {
  if (!text.starts_with("p1."))
    return false;
  text.remove_prefix(3);
  auto dot = text.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 10)
    return false;
  if (!std::all_of(text.begin(), text.begin() + dot, [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  auto mac = text.substr(dot + 1);
  return mac.size() == 43 && std::all_of(mac.begin(), mac.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9') || c == '-' || c == '_';
         });
}

} // namespace lockbridge::protocol
