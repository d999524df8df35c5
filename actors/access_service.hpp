#pragma once

#include <array>
#include <chrono>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "actors/failure.hpp"
#include "config/config.hpp"
#include "protocols/clock_guard.hpp"
#include "protocols/credentials.hpp"
#include "store/vault.hpp"

namespace lockbridge {

/// Decides `POST /v1/access` on libcoap's thread, from LMDB directly (a read
/// transaction; no actor in the way, so a decision never waits on a queue).
/// Plain code, no CAF. Journalling the decision is the caller's business
/// (the CoAP server reports it once the answer is sent).
class access_service {
public:
  /// Throws std::runtime_error if the time zone is unknown.
  access_service(std::shared_ptr<store::vault> vault, const config::gateway_config& cfg);

  protocol::access_decision decide(const std::string& lock_id,
                                   const protocol::access_request& request);

  /// The gateway's clock (never behind the highest time seen).
  std::int64_t now() { return clock_.read().now; }

  /// The clock guard, for saving its high-water mark.
  protocol::clock_guard& clock() noexcept { return clock_; }

  /// True if the set is older than credentials.max_age_hours (or never synced).
  bool stale(std::int64_t now_ms) const;

  /// The credentials actor says a sync succeeded (so that a decision need not
  /// read the set's metadata every time).
  void synced(std::int64_t at_ms) { synced_at_ = at_ms; }

  /// Decisions since start, by reason (index: protocol::access_reason).
  std::array<std::atomic<std::uint64_t>, 8> decisions{};
  std::atomic<std::int64_t> clock_behind_ms{0};

  /// Called (from the transport's thread) when a decision meets a damaged
  /// credential table: the supervisor's fatal path (thread-safe; the
  /// process then ends with the damaged-state code). Unset: just thrown.
  std::function<void(failure_kind, const std::string&)> on_fatal;

private:
  std::shared_ptr<store::vault> vault_;
  std::shared_ptr<store::credential_store> store_;
  std::atomic<std::int64_t> synced_at_{0};
  const void* zone_; // const date::time_zone*, kept opaque here
  std::int64_t max_age_ms_;
  config::offline_policy default_policy_;
  std::map<std::string, config::offline_policy, std::less<>> door_policies_;
  protocol::clock_guard clock_;
  /// When the next warning may be logged (steady clock ticks): decide()
  /// runs on the CoAP and the BLE threads at once.
  std::atomic<std::int64_t> next_clock_warning_{0};
  std::atomic<std::int64_t> next_stale_warning_{0};
  static bool due(std::atomic<std::int64_t>& next, std::chrono::steady_clock::time_point now,
                  std::chrono::steady_clock::duration every);
};

} // namespace lockbridge
