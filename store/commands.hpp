#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "store/environment.hpp"

namespace lockbridge::store {

/// The ids of lock commands accepted and not yet expired, so that a replayed
/// command is refused even after a restart. Thread-safe (LMDB serialises).
class command_ids {
  std::shared_ptr<const void> owner_;

public:
  void keep_alive(std::shared_ptr<const void> owner) { owner_ = std::move(owner); }

  explicit command_ids(environment& env) : env_(env) {}

  /// Records `id` until `expires_at` (Unix ms). False if it is already
  /// recorded: a replay. Durable when it returns true.
  bool remember(std::string_view id, std::int64_t expires_at);

  /// Forgets ids whose command expired before `now_ms`. Returns how many.
  std::uint64_t forget_expired(std::int64_t now_ms);

private:
  environment& env_;
};

} // namespace lockbridge::store
