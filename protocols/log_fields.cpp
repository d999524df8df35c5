#include "protocols/log_fields.hpp"

#include <algorithm>

namespace lockbridge::protocol {

namespace {

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
         || c == '-';
}

} // namespace

log_fields fields_of(std::string_view message) {
  log_fields f;
  auto colon = message.find(": ");
  if (colon != std::string_view::npos && colon > 0 && colon <= 16
      && std::all_of(message.begin(), message.begin() + static_cast<long>(colon),
                     [](char c) { return c >= 'a' && c <= 'z'; }))
    f.component.assign(message.substr(0, colon));
  for (std::size_t pos = 0; (pos = message.find("lock ", pos)) != std::string_view::npos; pos += 5) {
    if (pos > 0 && id_char(message[pos - 1]))
      continue; // "unlock ", "block "
    auto start = pos + 5;
    auto end = start;
    while (end < message.size() && end - start < 64 && id_char(message[end]))
      ++end;
    if (end > start && (end == message.size() || !id_char(message[end]))) {
      f.lock.assign(message.substr(start, end - start));
      break;
    }
  }
  return f;
}

std::string printable_text(std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

} // namespace lockbridge::protocol
