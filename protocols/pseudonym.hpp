#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocols/keyed_hmac.hpp"

namespace lockbridge::protocol {

/// Turns a personal identifier (a card UID, PIN or mobile-key id) into a
/// pseudonym: `p1.<epoch>.<base64url(HMAC-SHA-256(key, domain || 0 || id))>`.
/// The prefix names the format version and the key epoch so that keys can
/// rotate (issue 4) and old pseudonyms stay recognisable as old. Without the
/// key, a pseudonym cannot be linked to its identifier; once the epoch key is
/// destroyed, nobody can link it.
class pseudonymiser {
public:
  using key_type = std::array<std::uint8_t, 32>;

  /// Throws std::runtime_error if OpenSSL cannot set up HMAC-SHA-256.
  pseudonymiser(const key_type& key, std::uint32_t epoch);

  /// The pseudonym of `identifier` under this key and epoch.
  [[nodiscard]] std::string operator()(std::string_view identifier) const;

  [[nodiscard]] std::uint32_t epoch() const noexcept { return epoch_; }

private:
  keyed_hmac mac_;
  std::uint32_t epoch_;
};

/// True if `text` has the shape of a pseudonym of format version 1.
bool is_pseudonym(std::string_view text);

/// Base64url without padding (RFC 4648 section 5).
std::string base64url(const std::uint8_t* data, std::size_t size);

} // namespace lockbridge::protocol
