#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "store/environment.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

/// One pseudonym epoch: its number, random key and when it began.
struct epoch_key {
  std::uint32_t epoch = 0;
  key256 key{};
  std::int64_t created_at = 0; ///< Unix ms
};

/// The pseudonym epoch keys, sealed in the `epochs` table. The newest epoch
/// pseudonymises; older ones are kept only so the gateway can still find a
/// subject's pending events to erase them, and are destroyed once their epoch
/// ended longer ago than the retention window: from then on nobody, not even
/// someone holding the gateway, can link those pseudonyms to anything.
/// Thread-safe.
class epoch_store {
  std::shared_ptr<environment> owner_; ///< the environment outlives every store that uses it
  environment& env_;

public:
  /// Creates epoch 1 with a random key if the table holds none.
  epoch_store(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys, std::int64_t now_ms);

  /// The epoch in force.
  [[nodiscard]] epoch_key current() const;
  /// Every epoch whose key still exists, oldest first.
  [[nodiscard]] std::vector<epoch_key> all() const;

  /// Starts a new epoch with a fresh random key. Returns it.
  epoch_key rotate(std::int64_t now_ms);

  /// Destroys the keys of epochs that ended (their successor began) before
  /// `cutoff_ms`. Never the one in force. Returns the epochs destroyed.
  std::vector<std::uint32_t> destroy_ended_before(std::int64_t cutoff_ms);

  /// Re-seals every epoch key with the data key in force.
  void reseal();

private:
  void load();

  std::shared_ptr<const keyring> keys_;
  mutable std::mutex mutex_;
  std::vector<epoch_key> epochs_; ///< oldest first; never empty after construction
};

} // namespace lockbridge::store
