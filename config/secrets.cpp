#include "config/secrets.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "config/defaults.hpp"

namespace lockbridge::config {

namespace {

result<std::vector<std::uint8_t>> read_all(const std::filesystem::path& file, std::size_t max) {
  std::ifstream in{file, std::ios::binary};
  if (!in)
    return input_error{file.string(), "cannot read the file"};
  std::vector<std::uint8_t> bytes;
  char c;
  while (in.get(c)) {
    if (bytes.size() >= max)
      return input_error{file.string(), "file is larger than " + std::to_string(max) + " bytes"};
    bytes.push_back(static_cast<std::uint8_t>(c));
  }
  while (!bytes.empty() && (bytes.back() == '\n' || bytes.back() == '\r'))
    bytes.pop_back();
  return bytes;
}

int hex_value(std::uint8_t c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/// Secrets nobody should ship or keep: one repeated byte, a counting
/// sequence, or a word from an example. Compared on the file's text.
bool is_placeholder(const std::vector<std::uint8_t>& bytes) {
  if (bytes.empty())
    return true;
  if (std::all_of(bytes.begin(), bytes.end(), [&](std::uint8_t b) { return b == bytes[0]; }))
    return true;
  std::string text(bytes.begin(), bytes.end());
  std::string lower;
  for (char c : text)
    lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  for (const char* word : {"changeme", "change-me", "change_me", "secret", "password", "example",
                           "placeholder", "insecure", "default"})
    if (lower.find(word) != std::string::npos)
      return true;
  static const std::string counting = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  return counting.starts_with(lower) || lower == std::string(lower.size(), '0');
}

input_error placeholder_error(const std::filesystem::path& file) {
  return {file.string(), "holds a placeholder or trivial secret (a repeated byte, a counting "
                         "sequence or a word like \"changeme\"); make a random one, e.g. "
                         "openssl rand -hex 32 > FILE (or lockbridge provision lock --id ID)"};
}

} // namespace

result<std::vector<std::uint8_t>> read_psk(const std::filesystem::path& file) {
  auto bytes = read_all(file, 4096);
  if (!bytes)
    return bytes;
  if (bytes->size() < defaults::min_psk_bytes || bytes->size() > defaults::max_psk_bytes)
    return input_error{file.string(), "pre-shared key must be "
                                        + std::to_string(defaults::min_psk_bytes) + " to "
                                        + std::to_string(defaults::max_psk_bytes)
                                        + " bytes, the file holds "
                                        + std::to_string(bytes->size())};
  if (is_placeholder(*bytes))
    return placeholder_error(file);
  return bytes;
}

result<std::array<std::uint8_t, 32>> read_key32(const std::filesystem::path& file) {
  auto bytes = read_all(file, 4096);
  if (!bytes)
    return bytes.error();
  if (is_placeholder(*bytes))
    return placeholder_error(file);
  std::array<std::uint8_t, 32> key{};
  if (bytes->size() == 64) {
    for (std::size_t i = 0; i < 32; ++i) {
      int hi = hex_value((*bytes)[2 * i]);
      int lo = hex_value((*bytes)[2 * i + 1]);
      if (hi < 0 || lo < 0)
        return input_error{file.string(), "expected 64 hex digits or 32 raw bytes"};
      key[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    }
    return key;
  }
  if (bytes->size() == 32) {
    // 32 hex digits are 16 bytes written out (`openssl rand -hex 16`), not
    // 32 raw bytes: half the key the gateway needs. (32 random raw bytes
    // are all hex digits with a chance of about 1 in 10^34.)
    if (std::all_of(bytes->begin(), bytes->end(), [](std::uint8_t b) { return hex_value(b) >= 0; }))
      return input_error{file.string(), "holds 32 hex digits, a 128-bit key; a 256-bit key is 64 "
                                        "hex digits (make one with: openssl rand -hex 32)"};
    std::copy(bytes->begin(), bytes->end(), key.begin());
    return key;
  }
  return input_error{file.string(), "expected a 256-bit key: 64 hex digits or 32 raw bytes, got "
                                      + std::to_string(bytes->size()) + " bytes"};
}

bool world_readable(const std::filesystem::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0)
    return false;
  return (st.st_mode & S_IROTH) != 0;
}

} // namespace lockbridge::config
