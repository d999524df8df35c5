#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "config/config.hpp"
#include "store/environment.hpp"
#include "store/journal.hpp"

namespace lockbridge {

struct supervisor_config {
  config::gateway_config gateway;
  std::string version;
  /// Called once the listeners are up and the actors run (sd_notify READY).
  std::function<void()> on_ready;
  /// Called when the supervisor gives up (too many restarts): the process
  /// should exit non-zero so that systemd restarts it.
  std::function<void(const std::string&)> on_fatal;
  /// Called every `watchdog_interval` while every child runs (not while they
  /// restart): sd_notify WATCHDOG=1. Unset: no watchdog.
  std::function<void()> on_watchdog;
  std::chrono::milliseconds watchdog_interval{0};
  std::uint32_t max_restarts = 5;
  std::chrono::seconds restart_window{60};
};

using supervisor_actor = caf::typed_actor<
  /// Start (or restart) every child.
  caf::reacts_to<atom::restart>,
  /// Feed the watchdog if healthy (its own timer).
  caf::reacts_to<atom::tick>>;

struct supervisor_state {
  static inline const char* name = "supervisor";

  supervisor_config cfg;
  std::shared_ptr<store::environment> env;
  std::shared_ptr<store::journal> store;
  std::vector<caf::actor> children;
  std::vector<std::chrono::steady_clock::time_point> restarts;
  bool restarting = false;
};

/// Opens the store, spawns the uplink, journal, one lock_session per lock and
/// the CoAP endpoint, monitors them and restarts them all, with backoff, when
/// one fails (acknowledged data is on disk, so a restart loses nothing).
/// Throws std::runtime_error if the store or a listener cannot be opened.
supervisor_actor::behavior_type
supervisor(supervisor_actor::stateful_pointer<supervisor_state> self, supervisor_config cfg);

} // namespace lockbridge
