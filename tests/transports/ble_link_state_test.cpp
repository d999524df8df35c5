// What the BLE loop's tick does with a link, decided without D-Bus: the
// phases' time limits, the look for services again, and the releases of a
// ready connection.

#include "transports/ble_link_state.hpp"

#include <doctest/doctest.h>

using namespace lockbridge::transport;
using namespace std::chrono_literals;

namespace {

const auto t0 = std::chrono::steady_clock::time_point{} + 1000h;
const ble_link_limits limits{10s, 2s, 5s};

/// A link that entered `at` at t0, connected at t0, heard from at t0.
ble_link_view link_in(ble_phase at) {
  ble_link_view l;
  l.at = at;
  l.phase_since = l.connected_at = l.last_activity = l.last_resolve = t0;
  return l;
}

} // namespace

TEST_SUITE("transports") {

TEST_CASE("ble link: idle and connecting links are left to the scheduler and BlueZ") {
  CHECK(next_step(link_in(ble_phase::idle), limits, true, t0 + 1h) == ble_step::none);
  CHECK(next_step(link_in(ble_phase::connecting), limits, true, t0 + 1h) == ble_step::none);
  CHECK(to_string(ble_phase::resolving) == "resolving services");
}

TEST_CASE("ble link: resolving looks again every 500 ms and fails after the connect timeout") {
  auto l = link_in(ble_phase::resolving);
  CHECK(next_step(l, limits, false, t0 + 500ms) == ble_step::none);
  CHECK(next_step(l, limits, false, t0 + 501ms) == ble_step::resolve_again);
  l.last_resolve = t0 + 9800ms;
  CHECK(next_step(l, limits, false, t0 + 10s) == ble_step::none);
  CHECK(next_step(l, limits, false, t0 + 10001ms) == ble_step::fail_resolving);
}

TEST_CASE("ble link: a hello unanswered for the connect timeout fails the connection") {
  auto l = link_in(ble_phase::handshaking);
  CHECK(next_step(l, limits, false, t0 + 10s) == ble_step::none);
  CHECK(next_step(l, limits, false, t0 + 10001ms) == ble_step::fail_handshake);
}

TEST_CASE("ble link: a ready link is released when the lock is done or quiet, not before") {
  auto l = link_in(ble_phase::ready);
  CHECK(next_step(l, limits, false, t0 + 1s) == ble_step::none);
  l.lock_idle = true;
  CHECK(next_step(l, limits, false, t0 + 1s) == ble_step::release_done);
  // Work outstanding keeps it, idle or not: events the journal has not
  // answered, commands, a message half arrived.
  for (auto field : {&ble_link_view::events_in_flight, &ble_link_view::commands_waiting,
                     &ble_link_view::assembling}) {
    auto busy = l;
    busy.*field = true;
    CHECK(next_step(busy, limits, false, t0 + 3s) == ble_step::none);
  }
  l.lock_idle = false;
  CHECK(next_step(l, limits, false, t0 + 2s) == ble_step::none);
  CHECK(next_step(l, limits, false, t0 + 2001ms) == ble_step::release_quiet);
}

TEST_CASE("ble link: a state request unanswered keeps the link only until it is quiet") {
  auto l = link_in(ble_phase::ready);
  l.state_pending = true;
  l.lock_idle = true;
  CHECK(next_step(l, limits, false, t0 + 1s) == ble_step::none);
  CHECK(next_step(l, limits, false, t0 + 2001ms) == ble_step::release_done);
}

TEST_CASE("ble link: work that makes no progress for 30 s is released to start again") {
  auto l = link_in(ble_phase::ready);
  l.commands_waiting = true;
  CHECK(next_step(l, limits, false, t0 + 30s) == ble_step::none);
  CHECK(next_step(l, limits, false, t0 + 30001ms) == ble_step::release_stuck);
}

TEST_CASE("ble link: held past max_hold while others wait, it yields, never mid-message") {
  auto l = link_in(ble_phase::ready);
  l.commands_waiting = true;
  l.last_activity = t0 + 5s;
  CHECK(next_step(l, limits, false, t0 + 6s) == ble_step::none); // nobody waits
  CHECK(next_step(l, limits, true, t0 + 5s) == ble_step::none);  // not held long enough
  CHECK(next_step(l, limits, true, t0 + 6s) == ble_step::release_yield);
  auto mid = l;
  mid.assembling = true;
  CHECK(next_step(mid, limits, true, t0 + 6s) == ble_step::none);
  auto journal = l;
  journal.events_in_flight = true;
  CHECK(next_step(journal, limits, true, t0 + 6s) == ble_step::none);
}

} // TEST_SUITE
