#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace lockbridge::store {

/// Thrown when the store cannot be opened or a storage operation fails for a
/// reason other than the journal's own bound. The message says which file and
/// what LMDB reported; the kind says what the gateway does about it
/// (docs/operations.md, "When things fail").
class store_error : public std::runtime_error {
public:
  enum class kind {
    other,      ///< anything else (a bug, OpenSSL failing)
    damaged,    ///< the file is damaged: refuse it (exit 65), never write to it
    foreign,    ///< the state is not this gateway's, or not for this key (exit 65)
    in_use,     ///< another process holds the state (exit 69)
    unusable,   ///< the directory cannot be created, read or written (exit 69)
    storage,    ///< the disk is full or failing (ENOSPC, EIO, map full): ride it out
    panic,      ///< LMDB gave up on the environment after a failed write (exit 1)
  };
  explicit store_error(const std::string& what, kind k = kind::other)
    : std::runtime_error(what), kind_(k) {}
  [[nodiscard]] kind why() const noexcept { return kind_; }

private:
  kind kind_;
};

/// The kind of an LMDB (or errno) return code: damaged, storage, unusable, panic or other.
store_error::kind kind_of_lmdb_error(int rc) noexcept;

/// The LMDB environment under the state directory: one file `data.mdb` with
/// named databases. Opened once per process; readers and the single writer
/// share it. Transactions are internal to store/ (LMDB's types never reach a
/// header).
class environment {
public:
  /// Opens (creating if needed) the environment in `dir` with a map of
  /// `map_size` bytes. With `exclusive`, takes `lockbridge.lock` in the
  /// directory: a second daemon on the same state fails here with a clear
  /// message (LMDB alone would let both write and their caches drift).
  /// Before LMDB maps the file, the checks of store/state_check.hpp run
  /// (`preflight_state`; `start_empty` lets a recorded but missing or empty
  /// data file be started empty on purpose). Throws store_error.
  environment(const std::filesystem::path& dir, std::uint64_t map_size,
              bool exclusive = true, bool start_empty = false);
  ~environment();
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;

  /// The directory the environment lives in.
  [[nodiscard]] const std::filesystem::path& dir() const noexcept;

  struct impl;
  [[nodiscard]] impl& internals() noexcept { return *impl_; }

private:
  std::unique_ptr<impl> impl_;
};

/// The environment a store is built on. Every store holds a share of it, so
/// the environment closes after the last store that uses it, whatever order
/// their owners let go in. Throws store_error if `env` is empty.
inline environment& held(const std::shared_ptr<environment>& env) {
  if (!env)
    throw store_error("a store was built without an environment");
  return *env;
}

/// LMDB's map is address space, not disk: room for twice the journal's bound,
/// 2 GiB for credentials (about 2 million with their index) and some slack.
inline std::uint64_t map_size_for(std::uint64_t journal_max_bytes) {
  return journal_max_bytes * 2 + (2ull << 30) + (64ull << 20);
}

/// The version of the on-disk layout this build reads and writes.
inline constexpr std::uint32_t schema_version = 2;

} // namespace lockbridge::store
