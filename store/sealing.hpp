#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string_view>
#include <vector>

#include "store/environment.hpp"

namespace lockbridge::store {

using key256 = std::array<std::uint8_t, 32>;

/// 32 bytes from OpenSSL's CSPRNG. Throws store_error if it fails.
key256 random_key();

/// AES key wrap with padding (RFC 5649) under `kek` (16, 24 or 32 bytes).
std::vector<std::uint8_t> wrap_key(std::span<const std::uint8_t> kek,
                                   std::span<const std::uint8_t> key);
/// The unwrapped key, or nothing if `wrapped` was not wrapped by `kek` or was
/// altered (the wrap's integrity check fails).
std::optional<std::vector<std::uint8_t>> unwrap_key(std::span<const std::uint8_t> kek,
                                                    std::span<const std::uint8_t> wrapped);

/// Names of the sealed tables (part of each value's associated data).
namespace table {
inline constexpr std::string_view journal = "journal";
inline constexpr std::string_view credentials = "credentials";
inline constexpr std::string_view epochs = "epochs";
inline constexpr std::string_view audit = "audit";
inline constexpr std::string_view outbox = "outbox";
} // namespace table

/// The data keys that seal values at rest, wrapped in LMDB by the
/// key-encryption key (KEK), which itself never touches the store.
///
/// A sealed value is `0x01 | data-key id (u32 BE) | nonce (12) | AES-256-GCM
/// ciphertext | tag (16)`; its associated data binds it to its table, its
/// LMDB key, the schema version and the data key, so a value copied under
/// another key or into another table fails to open. Every seal draws a fresh
/// random nonce.
///
/// Several data keys may be live during a rotation: the newest seals, every
/// live one opens. Thread-safe: seal/open from any thread; the mutating
/// members (rotate, retire, rewrap) from one at a time.
class keyring {
  std::shared_ptr<environment> owner_; ///< the environment outlives every store that uses it
  environment& env_;

public:
  /// Opens the wrapped data keys with `kek`, creating the first one if the
  /// store has none. If `kek` does not open them and `previous_kek` does, they
  /// are re-wrapped under `kek` (a rotation done while stopped). Throws
  /// store_error saying what to do if neither opens them.
  keyring(std::shared_ptr<environment> env, const key256& kek, std::optional<key256> previous_kek = std::nullopt);

  static constexpr std::size_t overhead = 1 + 4 + 12 + 16;

  [[nodiscard]] std::vector<std::uint8_t> seal(std::string_view table,
                                               std::span<const std::uint8_t> key,
                                               std::span<const std::uint8_t> plain) const;
  /// The plaintext, or nothing if the value is not authentic here (altered,
  /// moved, or sealed by a data key no longer live).
  [[nodiscard]] std::optional<std::vector<std::uint8_t>>
  open(std::string_view table, std::span<const std::uint8_t> key,
       std::span<const std::uint8_t> sealed) const;

  /// The id of the data key a sealed value names (0 if it is not sealed).
  static std::uint32_t key_id_of(std::span<const std::uint8_t> sealed);

  [[nodiscard]] std::uint32_t current() const;
  [[nodiscard]] std::vector<std::uint32_t> ids() const;
  /// Whether `kek` is the key-encryption key in force.
  [[nodiscard]] bool is_kek(const key256& kek) const;

  /// Makes a new data key (stored wrapped) the one that seals; the old ones
  /// keep opening until retired. Returns its id.
  std::uint32_t rotate();
  /// Destroys data key `id` (no value may still need it). Not the current one.
  void retire(std::uint32_t id);
  /// Re-wraps every data key under `kek` in one transaction.
  void rewrap(const key256& kek);

private:
  std::uint64_t instance_; ///< distinguishes keyrings in the per-thread cipher cache
  mutable std::shared_mutex mutex_;
  std::mutex admin_mutex_; ///< one of rotate, retire, rewrap at a time
  key256 kek_{};
  std::map<std::uint32_t, key256> keys_;
  std::uint32_t current_ = 0;
};

} // namespace lockbridge::store
