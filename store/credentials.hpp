#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "protocols/credentials.hpp"
#include "protocols/keyed_hmac.hpp"
#include "store/environment.hpp"
#include "store/sealed_table.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

/// Figures about the credential set (status message, `credentials stats`).
struct credential_figures {
  std::uint64_t count = 0;
  std::uint64_t version = 0;         ///< 0: no sync ever applied
  std::int64_t synced_at = 0;        ///< Unix ms of the last successful sync, 0 if never
  std::int64_t time_high_water = 0;  ///< highest clock reading saved, Unix ms
};

/// The credentials a site's locks accept, keyed by a keyed HMAC of what the
/// lock reads (the "lookup key", under a key kept apart from the pseudonym
/// keys): a copy of the file reveals no card number or PIN. Values are sealed
/// (store/sealing.hpp). An index by a keyed HMAC of the subject (under the
/// same key, another domain) supports erasure without naming the subject.
///
/// One writer (the credentials actor) calls the mutating members; `find` and
/// `figures` may be called from any thread (each opens a read transaction).
class credential_store final : public sealed_table {
public:
  /// Keeps `owner` (the environment's owner) alive as long as this object:
  /// actors that outlive their supervisor's state still have a valid store.
  using lookup_key = protocol::keyed_hmac::mac_type;

  credential_store(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys,
                   const key256& lookup_key);

  /// The key a raw identifier is stored under.
  [[nodiscard]] lookup_key key_of(std::string_view raw) const { return lookup_(raw); }
  /// The key a subject is indexed under.
  [[nodiscard]] lookup_key subject_key_of(std::string_view subject) const {
    return subject_index_(subject);
  }

  /// What a lookup found. A record that fails to decode is reported as
  /// damaged, never used.
  struct found {
    std::optional<protocol::credential> credential;
    bool damaged = false;
  };
  [[nodiscard]] found find(const lookup_key& key) const;

  [[nodiscard]] credential_figures figures() const;

  /// Replaces the whole set with `entries` (keys must be distinct) at
  /// `version`, in one durable transaction: a crash before it commits leaves
  /// the old set, after it the new one.
  void replace_all(std::vector<std::pair<lookup_key, protocol::credential>> entries,
                   std::uint64_t version, std::int64_t now_ms);

  /// Counts of what a delta changed.
  struct delta_counts {
    std::uint64_t revoked = 0, deleted = 0, upserted = 0, not_found = 0;
  };

  /// Applies a delta in one durable transaction: revocations first, then
  /// deletions, then upserts. Returns nothing (and changes nothing) if
  /// `base_version` is not the version in force. A delta whose version equals
  /// its base and carries no change only confirms that the set is current.
  std::optional<delta_counts> apply(const protocol::credential_delta& delta, std::int64_t now_ms);

  /// Moves the value under `key`, if it still fails to open, into the
  /// quarantine table. Returns whether it did.
  bool quarantine(const lookup_key& key);

  /// Removes every credential of `subject` and its index entries in one
  /// durable transaction. Returns the lookup keys removed.
  std::vector<lookup_key> erase_subject(std::string_view subject);

  /// Re-seals, with the data key in force, up to `max` values from `from`
  /// (a lookup key; empty: the start) that an older data key sealed. Returns
  /// the key to continue from, or nothing at the end.
  std::optional<lookup_key> reseal(const std::optional<lookup_key>& from, std::size_t max);

  /// Saves the highest clock reading seen (Unix ms) if above the saved one.
  void save_time_high_water(std::int64_t ms);

private:
  protocol::keyed_hmac lookup_;
  protocol::keyed_hmac subject_index_;
};

} // namespace lockbridge::store
