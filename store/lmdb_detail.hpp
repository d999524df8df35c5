#pragma once
// Internal to store/: included only by store/*.cpp, never by a public header.

#include <lmdb.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "store/environment.hpp"

namespace lockbridge::store {

/// Throws store_error naming the operation and LMDB's reason.
[[noreturn]] void throw_lmdb(const char* what, int rc);

inline void check(int rc, const char* what) {
  if (rc != MDB_SUCCESS)
    throw_lmdb(what, rc);
}

struct environment::impl {
  MDB_env* env = nullptr;
  MDB_dbi meta = 0;
  MDB_dbi journal = 0;
  MDB_dbi progress = 0;
  MDB_dbi credentials = 0; ///< lookup key -> credential
  MDB_dbi subjects = 0;    ///< HMAC of subject -> lookup keys (sorted duplicates)
  MDB_dbi keys = 0;        ///< wrapped data keys
  MDB_dbi epochs = 0;      ///< pseudonym epoch (u32 BE) -> sealed epoch key
  MDB_dbi audit = 0;       ///< audit seq (u64 BE) -> sealed, hash-chained record
  MDB_dbi quarantine = 0;  ///< quarantine seq (u64 BE) -> what failed to open
  MDB_dbi commands = 0;    ///< lock command id -> its expiry (u64 BE) [+ the command, while unanswered]
  MDB_dbi outbox = 0;      ///< outbox number (u64 BE) -> sealed cmd_result JSON, until PUBACK
  std::filesystem::path dir;
  int lock_fd = -1;
};

/// A transaction that aborts on destruction unless committed. A write
/// transaction must begin and end within one message handler (LMDB ties it to
/// its thread).
class txn {
public:
  txn(MDB_env* env, bool write) {
    check(mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn_), "begin transaction");
  }
  ~txn() {
    if (txn_ != nullptr)
      mdb_txn_abort(txn_);
  }
  txn(const txn&) = delete;
  txn& operator=(const txn&) = delete;

  /// Commits; for a write transaction this returns after LMDB synced the file.
  void commit() {
    int rc = mdb_txn_commit(txn_);
    txn_ = nullptr;
    check(rc, "commit");
  }

  MDB_txn* get() const noexcept { return txn_; }

private:
  MDB_txn* txn_ = nullptr;
};

/// A cursor closed on destruction. LMDB frees a write transaction's cursors
/// when it commits: close() one that is still in scope before committing.
class cursor {
public:
  cursor(MDB_txn* t, MDB_dbi dbi) { check(mdb_cursor_open(t, dbi, &cur_), "open cursor"); }
  ~cursor() { close(); }
  void close() noexcept {
    if (cur_ != nullptr)
      mdb_cursor_close(cur_);
    cur_ = nullptr;
  }
  cursor(const cursor&) = delete;
  cursor& operator=(const cursor&) = delete;
  MDB_cursor* get() const noexcept { return cur_; }

private:
  MDB_cursor* cur_ = nullptr;
};

inline MDB_val as_val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

inline MDB_val as_val(std::span<const std::uint8_t> s) {
  return MDB_val{s.size(), const_cast<std::uint8_t*>(s.data())};
}

/// Big-endian u64: keys sort in numeric order under LMDB's default memcmp.
inline void put_be64(std::uint8_t* out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
}

inline std::uint64_t get_be64(const void* p) {
  auto b = static_cast<const std::uint8_t*>(p);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | b[i];
  return v;
}

/// Reads a u64 stored as 8 big-endian bytes; `fallback` if absent.
std::uint64_t get_u64(MDB_txn* t, MDB_dbi dbi, std::string_view key, std::uint64_t fallback);
void put_u64(MDB_txn* t, MDB_dbi dbi, std::string_view key, std::uint64_t value);

class keyring;

/// Re-seals, with the data key in force, up to `max` values of `dbi` from
/// key `from` (empty: the first) that an older data key sealed, in the
/// caller's write transaction. Values that do not open are left for
/// quarantine. Returns the key to continue from, empty at the end.
std::vector<std::uint8_t> reseal_values(MDB_txn* t, MDB_dbi dbi, const keyring& keys,
                                        std::string_view table,
                                        std::span<const std::uint8_t> from, std::size_t max);

/// Moves a value that failed to open into the quarantine table (store/quarantine.hpp).
/// The caller deletes it from its own table in the same transaction.
void quarantine_value(MDB_txn* t, environment::impl& in, std::string_view table,
                      std::span<const std::uint8_t> key, const MDB_val& value,
                      std::string_view reason, std::int64_t now_ms);

} // namespace lockbridge::store
