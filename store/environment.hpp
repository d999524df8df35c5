#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace lockbridge::store {

/// Thrown when the store cannot be opened or a storage operation fails for a
/// reason other than fullness (a damaged file, an I/O error). The message says
/// which file and what LMDB reported.
class store_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

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
  environment(const std::filesystem::path& dir, std::uint64_t map_size,
              bool exclusive = true);
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

/// LMDB's map is address space, not disk: room for twice the journal's bound,
/// 2 GiB for credentials (about 2 million with their index) and some slack.
inline std::uint64_t map_size_for(std::uint64_t journal_max_bytes) {
  return journal_max_bytes * 2 + (2ull << 30) + (64ull << 20);
}

/// The version of the on-disk layout this build reads and writes.
inline constexpr std::uint32_t schema_version = 2;

} // namespace lockbridge::store
