// Which lock-state messages the uplink publishes, decided without CAF or a
// broker: availability changes, every lock after a connection, a lock's own
// state at most once a second, and the clearing of a removed lock.

#include "actors/lock_presence.hpp"

#include <doctest/doctest.h>

using namespace lockbridge;

namespace {

constexpr std::int64_t t0 = 1'800'000'000'000;

protocol::lock_state state(bool locked, std::uint32_t battery = 90) {
  return protocol::lock_state{locked, false, battery, "1.2"};
}

std::vector<std::string> locks_in(const std::vector<lock_presence::publication>& ps) {
  std::vector<std::string> out;
  for (const auto& p : ps)
    out.push_back(p.lock + (p.clear ? ":clear" : p.available ? ":up" : ":down"));
  return out;
}

} // namespace

TEST_SUITE("actors") {

TEST_CASE("lock presence: a change is published once; a connection publishes every lock") {
  lock_presence presence{std::chrono::seconds{300}};
  lock_presence::seen_list seen{{"a", t0 - 1000}, {"b", 0}};
  CHECK(locks_in(presence.survey(seen, t0, false)) == std::vector<std::string>{"a:up", "b:down"});
  CHECK(presence.survey(seen, t0 + 2000, false).empty());
  CHECK(presence.available_count() == 1);
  // After connecting, all of them (the broker may have lost its retained state).
  CHECK(locks_in(presence.survey(seen, t0 + 4000, true)) ==
        std::vector<std::string>{"a:up", "b:down"});
}

TEST_CASE("lock presence: a lock silent longer than lock_silence becomes unavailable") {
  lock_presence presence{std::chrono::seconds{300}};
  lock_presence::seen_list seen{{"a", t0}};
  presence.survey(seen, t0, false);
  CHECK(presence.survey(seen, t0 + 300'000, false).empty()); // exactly the silence: still up
  auto down = presence.survey(seen, t0 + 300'001, false);
  REQUIRE(down.size() == 1);
  CHECK_FALSE(down[0].available);
  CHECK(down[0].last_seen == t0);
  CHECK(presence.available_count() == 0);
  // A shorter silence from a reload applies at the next survey.
  presence.set_silence(std::chrono::seconds{10});
  seen = {{"a", t0 + 400'000}};
  CHECK(locks_in(presence.survey(seen, t0 + 405'000, false)) == std::vector<std::string>{"a:up"});
  CHECK(locks_in(presence.survey(seen, t0 + 411'000, false)) ==
        std::vector<std::string>{"a:down"});
}

TEST_CASE("lock presence: a lock's own state goes out at once; within the second, the latest waits") {
  lock_presence presence{std::chrono::seconds{300}};
  lock_presence::seen_list seen{{"a", t0}};
  presence.survey(seen, t0, false);
  auto first = presence.observed("a", state(true), t0, t0);
  REQUIRE(first);
  REQUIRE(first->state);
  CHECK(first->state->locked);
  presence.sent(*first, t0);
  // The same state again: nothing to say.
  CHECK_FALSE(presence.observed("a", state(true), t0, t0 + 10));
  // Two changes within the second: held back, the latest wins.
  CHECK_FALSE(presence.observed("a", state(false), t0, t0 + 100));
  CHECK_FALSE(presence.observed("a", state(false, 80), t0, t0 + 200));
  CHECK(presence.has_waiting());
  auto due = presence.waiting(seen);
  REQUIRE(due.size() == 1);
  REQUIRE(due[0].state);
  CHECK_FALSE(due[0].state->locked);
  CHECK(due[0].state->battery == 80);
  presence.sent(due[0], t0 + 1000);
  CHECK_FALSE(presence.has_waiting());
  CHECK(presence.waiting(seen).empty());
  // A second later, a change goes out at once again.
  CHECK(presence.observed("a", state(true), t0, t0 + 2000));
}

TEST_CASE("lock presence: a lock that notifies its state is available again at once") {
  lock_presence presence{std::chrono::seconds{300}};
  lock_presence::seen_list seen{{"a", 0}};
  presence.survey(seen, t0, false);
  CHECK(presence.available_count() == 0);
  auto p = presence.observed("a", state(true), t0 + 5, t0 + 5);
  REQUIRE(p);
  CHECK(p->available);
  CHECK(presence.available_count() == 1);
}

TEST_CASE("lock presence: a removed lock's message is cleared, until the clearing is sent") {
  lock_presence presence{std::chrono::seconds{300}};
  presence.survey({{"a", t0}, {"b", t0}}, t0, false);
  auto p = presence.observed("b", state(true), t0, t0);
  REQUIRE(p);
  presence.sent(*p, t0);
  // A reload removed b; offline, the clearing is not sent and is asked again.
  lock_presence::seen_list only_a{{"a", t0}};
  CHECK(locks_in(presence.survey(only_a, t0 + 2000, false)) ==
        std::vector<std::string>{"b:clear"});
  auto again = presence.survey(only_a, t0 + 4000, false);
  REQUIRE(again.size() == 1);
  presence.sent(again[0], t0 + 4000);
  CHECK(presence.survey(only_a, t0 + 6000, false).empty());
  // b comes back: a fresh message, without the state it had.
  auto back = presence.survey({{"a", t0}, {"b", t0 + 7000}}, t0 + 8000, false);
  REQUIRE(back.size() == 1);
  CHECK(back[0].lock == "b");
  CHECK_FALSE(back[0].state);
}

TEST_CASE("lock presence: a lock removed and added back before the clearing went out is kept") {
  lock_presence presence{std::chrono::seconds{300}};
  presence.survey({{"a", t0}, {"b", t0}}, t0, false);
  CHECK(locks_in(presence.survey({{"a", t0}}, t0 + 1000, false)) ==
        std::vector<std::string>{"b:clear"});
  CHECK(locks_in(presence.survey({{"a", t0}, {"b", t0}}, t0 + 2000, false)) ==
        std::vector<std::string>{"b:up"});
}

} // TEST_SUITE
