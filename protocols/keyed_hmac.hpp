#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>

namespace lockbridge::protocol {

/// HMAC-SHA-256 under one key with a fixed domain-separation label:
/// mac = HMAC(key, domain || 0x00 || message). The key is set up once in
/// OpenSSL and the prepared context duplicated per message. Copies share the
/// prepared context; calls are safe from several threads.
class keyed_hmac {
public:
  using key_type = std::array<std::uint8_t, 32>;
  using mac_type = std::array<std::uint8_t, 32>;

  /// Throws std::runtime_error if OpenSSL cannot set up HMAC-SHA-256.
  keyed_hmac(const key_type& key, std::string_view domain);

  [[nodiscard]] mac_type operator()(std::string_view message) const;

private:
  struct prepared;
  std::shared_ptr<prepared> prepared_;
};

} // namespace lockbridge::protocol
