#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/failure.hpp"
#include "actors/interfaces.hpp"
#include "actors/uplink.hpp"
#include "config/config.hpp"
#include "store/vault.hpp"

namespace lockbridge::transport {
class coap_server;
class ble_transport;
class transport_set;
}

namespace lockbridge {

/// A configuration handed to the supervisor on reload (SIGHUP).
using config_ptr = std::shared_ptr<const config::gateway_config>;

/// The configured locks and the journal their events go to, read by the
/// transports' threads (which pseudonymise what a lock sent where it was
/// decoded and hand it to the journal), changed by reloads. One per start
/// of the actors; the journal is entered when it is spawned, before any
/// transport runs. Thread-safe.
struct lock_roster {
  /// The journal, if `lock` is configured.
  [[nodiscard]] std::optional<journal_actor> journal_for(std::string_view lock) const {
    std::lock_guard guard{mutex_};
    if (!locks_.contains(lock) || !journal_)
      return std::nullopt;
    return journal_;
  }
  [[nodiscard]] bool contains(std::string_view lock) const {
    std::lock_guard guard{mutex_};
    return locks_.contains(lock);
  }
  [[nodiscard]] std::vector<std::string> ids() const {
    std::lock_guard guard{mutex_};
    return {locks_.begin(), locks_.end()};
  }
  void add(const std::string& lock) {
    std::lock_guard guard{mutex_};
    locks_.insert(lock);
  }
  void remove(const std::string& lock) {
    std::lock_guard guard{mutex_};
    locks_.erase(lock);
  }
  void set_journal(journal_actor journal) {
    std::lock_guard guard{mutex_};
    journal_ = std::move(journal);
  }

private:
  mutable std::mutex mutex_;
  std::set<std::string, std::less<>> locks_;
  journal_actor journal_;
};

struct supervisor_config {
  config::gateway_config gateway;
  std::string version;
  /// The state, opened by the caller before any actor starts (a start in
  /// stages: a damaged state ends the start before the listeners bind).
  std::shared_ptr<store::vault> vault;
  /// Called once the listeners are up and the actors run (sd_notify READY).
  std::function<void()> on_ready;
  /// Called instead of on_ready when the start fails (once; the supervisor
  /// has stopped whatever it had started and ends).
  std::function<void(failure_kind, const std::string&)> on_start_failed;
  /// Called when the supervisor gives up after READY (too many restarts, a
  /// damaged state found at run time): the process should exit non-zero
  /// with the kind's code so that systemd's policy applies.
  std::function<void(failure_kind, const std::string&)> on_fatal;
  /// Called every `watchdog_interval` while every child runs (not while they
  /// restart): sd_notify WATCHDOG=1. Unset: no watchdog.
  std::function<void()> on_watchdog;
  std::chrono::milliseconds watchdog_interval{0};
  std::uint32_t max_restarts = 5;
  std::chrono::seconds restart_window{60};
};

} // namespace lockbridge
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::config_ptr)
namespace lockbridge {

using supervisor_actor = caf::typed_actor<
  /// Start (or restart) every child.
  caf::reacts_to<atom::restart>,
  /// Apply a new configuration: what config/keys.cpp marks `applied` takes
  /// effect (locks added, removed or re-keyed without touching the others);
  /// other changed keys are named as needing a restart. The answer is the
  /// outcome as JSON (an empty config_ptr: the file was refused).
  caf::replies_to<atom::reload, config_ptr>::with<std::string>,
  /// Feed the watchdog if healthy (its own timer).
  caf::reacts_to<atom::tick>,
  /// The local status (JSON), from the uplink (`lockbridge status`).
  caf::replies_to<atom::get>::with<std::string>,
  /// A command from the local socket (erase_subject, rotate_keys): the result JSON.
  caf::replies_to<atom::command, std::string, std::string>::with<std::string>,
  /// A command handler's result, relayed to the running uplink.
  caf::reacts_to<atom::result, command_reply_ptr>,
  /// A lock's own state from a transport, relayed to the running uplink.
  caf::reacts_to<atom::observed, std::string, lock_state_ptr>>;

struct supervisor_state {
  static inline const char* name = "supervisor";

  supervisor_config cfg;
  std::shared_ptr<store::vault> vault;
  std::vector<caf::actor> children;
  // What a reload needs of the running children:
  std::shared_ptr<transport::coap_server> server;
  std::shared_ptr<transport::ble_transport> ble; ///< when BLE locks were configured at start
  std::shared_ptr<transport::transport_set> transports;
  std::shared_ptr<lock_roster> roster;
  journal_actor journal;
  uplink_actor uplink;
  keeper_actor keeper;
  std::vector<std::chrono::steady_clock::time_point> restarts;
  bool restarting = false;
};

/// Reads the key files named in `gw` and opens the state (store/vault.hpp).
/// With `exclusive` (the daemon), the state must be this gateway's
/// (store::state_owner); `start_empty` accepts a recorded state whose data
/// file is gone. Throws configuration_error (a key file) or
/// store::store_error saying what is wrong.
std::shared_ptr<store::vault> open_state(const config::gateway_config& gw, bool exclusive = true,
                                         bool start_empty = false);

/// Opens the store, spawns the uplink, journal, one lock_session per lock and
/// the CoAP endpoint, monitors them and restarts them all, with backoff, when
/// one fails (acknowledged data is on disk, so a restart loses nothing).
/// Throws std::runtime_error if the store or a listener cannot be opened.
supervisor_actor::behavior_type
supervisor(supervisor_actor::stateful_pointer<supervisor_state> self, supervisor_config cfg);

} // namespace lockbridge
