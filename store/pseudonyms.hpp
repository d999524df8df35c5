#pragma once

#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/keyed_hmac.hpp"
#include "protocols/pseudonym.hpp"
#include "store/epochs.hpp"

namespace lockbridge::store {

/// Pseudonyms of credential identifiers under the epoch keys:
/// `p1.<epoch>.<HMAC-SHA-256(epoch key, domain || 0 || lookup key)>`, where the
/// lookup key is the credential store's keyed HMAC of the raw identifier. Going
/// through the lookup key lets the gateway find a subject's pseudonyms from
/// the credential store alone (which never holds raw identifiers) when it
/// erases that subject. Thread-safe; `refresh` after the epochs change.
class pseudonym_source {
public:
  pseudonym_source(std::shared_ptr<epoch_store> epochs, const key256& lookup_key);

  /// The pseudonym of a raw identifier in the epoch in force.
  [[nodiscard]] std::string operator()(std::string_view raw) const;

  /// The pseudonyms of a lookup key under every epoch whose key still exists.
  [[nodiscard]] std::vector<std::string>
  all_of(const protocol::keyed_hmac::mac_type& lookup_key) const;

  /// The epoch in force.
  [[nodiscard]] std::uint32_t epoch() const;

  /// Re-reads the epoch keys (after a rotation or destruction).
  void refresh();

private:
  std::shared_ptr<epoch_store> epochs_;
  protocol::keyed_hmac lookup_;
  mutable std::shared_mutex mutex_;
  std::vector<std::shared_ptr<const protocol::pseudonymiser>> by_epoch_; ///< oldest first
};

} // namespace lockbridge::store
