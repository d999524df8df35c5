#include "actors/access_service.hpp"

#include <date/tz.h>
#include <spdlog/spdlog.h>


namespace lockbridge {

access_service::access_service(std::shared_ptr<store::vault> vault,
                               const config::gateway_config& cfg)
  : vault_(std::move(vault)),
    store_(vault_->credentials),
    zone_(date::locate_zone(cfg.time_zone)),
    max_age_ms_(std::int64_t{cfg.credentials.max_age_hours} * 3600 * 1000),
    default_policy_(cfg.credentials.default_policy),
    clock_(store_->figures().time_high_water) {
  for (const auto& d : cfg.credentials.doors)
    door_policies_.emplace(d.id, d.policy);
  synced_at_ = store_->figures().synced_at;
}

bool access_service::stale(std::int64_t now_ms) const {
  auto synced = synced_at_.load();
  return synced == 0 || now_ms - synced > max_age_ms_;
}

bool access_service::due(std::atomic<std::int64_t>& next, std::chrono::steady_clock::time_point now,
                         std::chrono::steady_clock::duration every) {
  auto at = now.time_since_epoch().count();
  auto expected = next.load(std::memory_order_relaxed);
  // One of the threads deciding (CoAP, BLE) wins the line; the other skips it.
  return at >= expected
         && next.compare_exchange_strong(expected, at + every.count(), std::memory_order_relaxed);
}

protocol::access_decision access_service::decide(const std::string& lock_id,
                                                 const protocol::access_request& request) {
  auto clock = clock_.read();
  clock_behind_ms = clock.behind_ms;
  auto steady = std::chrono::steady_clock::now();
  if (clock.behind_ms > 2000 && due(next_clock_warning_, steady, std::chrono::minutes{1})) {
    spdlog::warn("access: the system clock is {} s behind the latest time this gateway has "
                 "seen; deciding with the latter so that no expired credential opens again "
                 "(check NTP and the real-time clock)",
                 clock.behind_ms / 1000);
  }
  protocol::access_decision decision;
  auto policy = default_policy_;
  if (auto it = door_policies_.find(request.door); it != door_policies_.end())
    policy = it->second;
  if (stale(clock.now)) {
    if (due(next_stale_warning_, steady, std::chrono::minutes{10})) {
      spdlog::warn("access: the credential set is stale (no successful sync within the "
                   "configured maximum age); door {} follows its policy {}",
                   request.door,
                   policy == config::offline_policy::fail_secure ? "fail_secure (deny)"
                                                                 : "keep_last_known");
    }
    if (policy == config::offline_policy::fail_secure)
      decision = {false, protocol::access_reason::stale_store, std::nullopt};
  }
  if (decision.reason != protocol::access_reason::stale_store) {
    auto key = store_->key_of(request.cred);
    store::credential_store::found found;
    try {
      found = store_->find(key);
    } catch (const store::store_error& e) {
      // A damaged credential table: this door gets no decision (5.00 from
      // the transport), and the process ends with the damaged-state code
      // rather than answering from a file it cannot trust.
      if (on_fatal && (e.why() == store::store_error::kind::damaged
                       || e.why() == store::store_error::kind::panic)) {
        spdlog::critical("access: the credential table is damaged: {}", e.what());
        on_fatal(e.why() == store::store_error::kind::damaged ? failure_kind::state
                                                              : failure_kind::runtime,
                 e.what());
      }
      throw;
    }
    if (found.damaged) {
      // Never used, never a crash: the door gets "unknown credential", the
      // value goes to quarantine, and the event is counted and audited.
      spdlog::error("access: a stored credential does not open (altered or moved; lock {}, "
                    "door {}); it was not used and is quarantined; the next snapshot replaces it",
                    lock_id, request.door);
      try {
        if (store_->quarantine(key)) {
          ++vault_->quarantined;
          audit(*vault_, "quarantine", {{"table", "credentials"}, {"lock", lock_id}});
        }
      } catch (const std::exception& e) {
        spdlog::error("access: quarantine failed: {}", e.what());
      }
    }
    decision = protocol::decide(found.credential ? &*found.credential : nullptr, request.door,
                                clock.now, *static_cast<const date::time_zone*>(zone_));
  }
  ++decisions[static_cast<std::size_t>(decision.reason)];
  return decision;
}

} // namespace lockbridge
