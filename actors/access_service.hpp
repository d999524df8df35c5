#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "protocols/clock_guard.hpp"
#include "protocols/credentials.hpp"
#include "store/credentials.hpp"

namespace lockbridge {

/// Decides `POST /v1/access` on libcoap's thread, from LMDB directly (a read
/// transaction; no actor in the way, so a decision never waits on a queue).
/// Plain code, no CAF: the supervisor wires `on_decided` to the lock's
/// session, which journals the decision.
class access_service {
public:
  using decided_sink = std::function<void(
    const std::string& lock_id, const protocol::access_request& request,
    const protocol::access_decision& decision, std::int64_t decided_at)>;

  /// Throws std::runtime_error if the time zone is unknown.
  access_service(std::shared_ptr<store::credential_store> store, const config::gateway_config& cfg,
                 decided_sink on_decided);

  protocol::access_decision decide(const std::string& lock_id,
                                   const protocol::access_request& request);

  /// The gateway's clock (never behind the highest time seen).
  std::int64_t now() { return clock_.read().now; }

  /// The clock guard, for saving its high-water mark.
  protocol::clock_guard& clock() noexcept { return clock_; }

  /// True if the set is older than credentials.max_age_hours (or never synced).
  bool stale(std::int64_t now_ms) const;

  /// Decisions since start, by reason (index: protocol::access_reason).
  std::array<std::atomic<std::uint64_t>, 8> decisions{};
  std::atomic<std::int64_t> clock_behind_ms{0};

private:
  std::shared_ptr<store::credential_store> store_;
  const void* zone_; // const date::time_zone*, kept opaque here
  std::int64_t max_age_ms_;
  config::offline_policy default_policy_;
  std::map<std::string, config::offline_policy, std::less<>> door_policies_;
  decided_sink on_decided_;
  protocol::clock_guard clock_;
  std::chrono::steady_clock::time_point next_clock_warning_{};
  std::chrono::steady_clock::time_point next_stale_warning_{};
};

} // namespace lockbridge
