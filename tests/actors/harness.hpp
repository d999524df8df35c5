#pragma once
// The actor tests' fixture: an actor system on CAF's testing scheduler, so
// that a test runs every mailbox to empty when it chooses and moves the
// clock on purpose (no sleeps, no threads), and a state directory with a
// real vault (LMDB in a temporary directory) for the actors that keep data.
//
// caf/test/dsl.hpp does not work under doctest (../shared/STYLE.md), so
// this drives caf::scheduler::test_coordinator directly.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/stateful_actor.hpp>

#include "protocols/clock_guard.hpp"
#include "store/vault.hpp"
#include "tests/store/helpers.hpp"

namespace lockbridge::test {

class actor_fixture {
public:
  actor_fixture() : sys_{configure(cfg_)} {
    sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(sys_.scheduler());
    // The actors end in the destructor; a test that failed half-way must
    // not leave the system waiting for one that never runs again.
    sys_.await_actors_before_shutdown(false);
  }

  actor_fixture(const actor_fixture&) = delete;
  actor_fixture& operator=(const actor_fixture&) = delete;

  ~actor_fixture() {
    for (auto& a : spawned_)
      caf::anon_send_exit(a, caf::exit_reason::kill);
    run();
  }

  caf::actor_system& sys() noexcept { return sys_; }

  /// Spawns an actor that ends with the fixture. A function actor needs at
  /// least one argument after its self pointer: CAF 0.17 binds a reference
  /// to a null argument tuple otherwise (UBSan stops the sanitizer build).
  template <class... Ts>
  auto spawn(Ts&&... xs) {
    auto handle = sys_.spawn(std::forward<Ts>(xs)...);
    spawned_.push_back(caf::actor_cast<caf::actor>(handle));
    return handle;
  }

  /// Runs every actor until all mailboxes are empty; returns the jobs run.
  std::size_t run() { return sched_->run(); }

  /// Moves the clock by `d`, fires the timers due, and runs to quiescence.
  std::size_t advance(caf::timespan d) {
    auto fired = sched_->clock().advance_time(d);
    run();
    return fired;
  }

  /// Whether any timer is armed (a reconnect, a retry, a periodic tick).
  bool timers_pending() const { return sched_->clock().has_pending_timeout(); }

  /// The state of a stateful actor spawned from a function (what CAF's own
  /// test DSL calls deref): `Handle` is its typed handle.
  template <class State, class Handle>
  State& state_of(const Handle& h) {
    auto* ptr = caf::actor_cast<caf::abstract_actor*>(h);
    return dynamic_cast<caf::stateful_actor<State, typename Handle::base>&>(*ptr).state;
  }

private:
  static caf::actor_system_config& configure(caf::actor_system_config& cfg) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.console", caf::atom("none"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    return cfg;
  }

  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  std::vector<caf::actor> spawned_;
};

/// A vault (every table: journal, credentials, audit, epochs, commands,
/// results) in its own temporary directory, under test keys.
struct vault_dir {
  temp_dir dir;
  std::shared_ptr<store::vault> vault;

  explicit vault_dir(std::uint64_t journal_max_bytes = 64ull << 20,
                     std::int64_t now_ms = protocol::unix_ms_now()) {
    store::vault_keys keys;
    keys.kek = test_kek();
    keys.lookup = test_kek(7);
    vault = store::open_vault(dir.path, journal_max_bytes, keys, now_ms, true,
                              store::state_owner{"site-1", "gw-1", false});
  }
};

} // namespace lockbridge::test
