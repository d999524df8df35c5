#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "store/environment.hpp"

namespace lockbridge::store {

/// The ids of lock commands accepted and not yet expired, so that a replayed
/// command is refused even after a restart. Thread-safe (LMDB serialises).
class command_ids {
  std::shared_ptr<environment> owner_; ///< the environment outlives every store that uses it
  environment& env_;

public:
  explicit command_ids(std::shared_ptr<environment> env)
    : owner_(std::move(env)), env_(held(owner_)) {}

  /// Records `id` until `expires_at` (Unix ms). False if it is already
  /// recorded: a replay. Durable when it returns true.
  bool remember(std::string_view id, std::int64_t expires_at);

  /// The same, keeping the command itself (its lock and the request the
  /// lock gets) until it is answered (outbox::append_answer), so that a
  /// restart can send it again or report it.
  bool remember(std::string_view id, std::int64_t expires_at, std::string_view lock,
                std::span<const std::uint8_t> request);

  /// A command accepted and not answered yet (the gateway stopped meanwhile).
  struct unanswered_command {
    std::string id;
    std::string lock;
    std::int64_t expires_at = 0;
    std::vector<std::uint8_t> request;
  };
  [[nodiscard]] std::vector<unanswered_command> unanswered() const;

  /// Forgets answered ids whose command expired before `now_ms`. Returns how
  /// many. An unanswered one stays until its result is recorded.
  std::uint64_t forget_expired(std::int64_t now_ms);

};

} // namespace lockbridge::store
