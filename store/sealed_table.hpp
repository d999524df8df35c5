#pragma once
// The base of every table whose values are sealed with the data keys
// (store/sealing.hpp): the journal, the audit trail, the outbox of results
// (sealed_log, keyed by a rising u64) and the credentials (keyed by their
// lookup HMAC). What they do alike is written once, here: holding the
// environment (a share of its ownership) and the keyring, the one re-seal
// walk a data-key rotation drives, the writer lock, and for the logs the
// read walk that opens values in key order and sets aside those that do not
// open, and the quarantine of those. A table says only how its plaintext
// decodes. LMDB stays out of this header.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "store/environment.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

class sealed_table {
public:
  virtual ~sealed_table() = default;
  sealed_table(const sealed_table&) = delete;
  sealed_table& operator=(const sealed_table&) = delete;

  /// The table's name: what its values' associated data binds them to.
  [[nodiscard]] std::string_view table_name() const noexcept { return table_; }

protected:
  /// `table` is one of store::table (a string with static lifetime).
  sealed_table(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys,
               std::string_view table);

  /// One step of re-sealing: up to `max` values from key `from` (empty: the
  /// first) that an older data key sealed are sealed again under the one in
  /// force, in a write transaction of their own under the writer lock.
  /// Values that do not open are left for quarantine. Returns the key to
  /// continue from, empty at the end.
  std::vector<std::uint8_t> reseal_from(std::span<const std::uint8_t> from, std::size_t max);

  /// Whether an opened value is one of this table's (one that opens but
  /// does not decode is damaged as well). By default every one is.
  [[nodiscard]] virtual bool decodes(std::span<const std::uint8_t> plain) const;

  // Declared first, destroyed last: what keeps the environment alive.
  std::shared_ptr<environment> owner_;
  environment& env_;
  std::shared_ptr<const keyring> keys_;
  /// Writers of this table that must not interleave (the journal's cached
  /// figures, the audit chain's head) take it; LMDB serialises the
  /// transactions themselves.
  std::mutex writer_;

private:
  std::string_view table_;
};

/// A sealed table keyed by a rising u64, big-endian in LMDB so that keys
/// sort in order: journal keys, audit seqs, outbox numbers.
class sealed_log : public sealed_table {
public:
  /// Re-seals up to `max` entries from `from` under the data key in force;
  /// returns the key to continue from, 0 at the end.
  std::uint64_t reseal(std::uint64_t from, std::size_t max);

  /// Moves the entries under `keys` that still do not open (a data key may
  /// have come back) to the quarantine table (store/quarantine.hpp), so they
  /// stop being read and counted. Returns how many moved.
  virtual std::uint64_t quarantine(std::span<const std::uint64_t> keys);

protected:
  using sealed_table::sealed_table;

  /// Called with each entry that opened, in key order; decodes it and
  /// returns true, or false if it does not decode (it is damaged then).
  using visitor = std::function<bool(std::uint64_t key, std::span<const std::uint8_t> plain)>;

  /// Walks up to `max` entries keyed `from` or later in one read
  /// transaction: each that opens goes to `take`; the keys of those that do
  /// not open or that `take` cannot decode go to `damaged` (if given) and
  /// do not count towards `max`.
  void walk(std::uint64_t from, std::size_t max, std::vector<std::uint64_t>* damaged,
            const visitor& take) const;

  /// What quarantine_in moved: entries and the bytes of their values.
  struct moved_entries {
    std::uint64_t count = 0;
    std::uint64_t value_bytes = 0;
  };
  /// The quarantine, in the caller's write transaction (an MDB_txn*),
  /// which the caller commits if anything moved.
  moved_entries quarantine_in(void* txn, std::span<const std::uint64_t> keys);
};

} // namespace lockbridge::store
