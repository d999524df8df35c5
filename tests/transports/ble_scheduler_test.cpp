// The BLE radio scheduler alone (no D-Bus, no BlueZ mock): the adapter's
// connection limit, the priorities, the backoff after failures, polls, and
// fairness among 20 locks that all want the radio.

#include "transports/ble_scheduler.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>

using namespace lockbridge::transport;
using namespace std::chrono_literals;
using time_point = radio_demand::time_point;

namespace {

/// Locks "lock-00".."lock-NN", each free, nothing wanted, polls far ahead.
struct site {
  time_point t0 = std::chrono::steady_clock::now();
  std::map<std::string, radio_demand> demand;
  std::set<std::string> busy;   ///< connected now
  std::set<std::string> commands; ///< commands wait for these

  explicit site(int locks) {
    for (int i = 0; i < locks; ++i) {
      auto id = std::string{"lock-"} + (i < 10 ? "0" : "") + std::to_string(i);
      demand[id].next_poll = t0 + 24h;
    }
  }

  std::vector<std::string> pick(const radio_scheduler& s, time_point now) {
    std::vector<radio_scheduler::candidate> c;
    for (auto& [id, d] : demand)
      c.push_back({id, &d, !busy.contains(id), commands.contains(id)});
    auto chosen = s.pick(c, busy.size(), now);
    busy.insert(chosen.begin(), chosen.end());
    return chosen;
  }

  /// The lock said everything and its link ended.
  void done(const std::string& id) {
    busy.erase(id);
    demand[id].advertised = false;
    demand[id].urgent = false;
    commands.erase(id);
  }
};

} // namespace

TEST_SUITE("transports") {

TEST_CASE("ble scheduler: never more links than the adapter takes") {
  radio_scheduler s{3, 300s};
  site x{10};
  for (auto& [id, d] : x.demand)
    d.wants(x.t0);
  CHECK(x.pick(s, x.t0).size() == 3);
  CHECK(x.pick(s, x.t0).empty()); // all three slots held
  x.done("lock-00");
  auto next = x.pick(s, x.t0 + 1s);
  CHECK(next.size() == 1);
  CHECK(x.busy.size() == 3);
  CHECK(s.max_connections() == 3);
}

TEST_CASE("ble scheduler: an access query first, then commands, then events, then polls") {
  radio_scheduler s{1, 300s};
  site x{5};
  auto now = x.t0 + 1s;
  x.demand["lock-00"].next_poll = x.t0;           // poll due
  x.demand["lock-01"].wants(x.t0 - 10s);          // events, waiting longest
  x.commands.insert("lock-02");                   // a command
  x.demand["lock-03"].urgent = true;              // an access query
  x.demand["lock-03"].wants(now);                 // ...advertised just now
  std::vector<std::string> order;
  for (int i = 0; i < 5; ++i) {
    auto chosen = x.pick(s, now);
    if (chosen.empty())
      break;
    REQUIRE(chosen.size() == 1);
    order.push_back(chosen[0]);
    x.done(chosen[0]);
  }
  // lock-04 wants nothing and is not due: never chosen.
  CHECK(order == std::vector<std::string>{"lock-03", "lock-02", "lock-01", "lock-00"});
  CHECK(radio_scheduler::rank_of(x.demand["lock-04"], false, now) == radio_scheduler::none);
}

TEST_CASE("ble scheduler: a chosen lock's next poll moves a poll interval ahead") {
  radio_scheduler s{2, 300s};
  site x{1};
  x.demand["lock-00"].next_poll = x.t0;
  REQUIRE(x.pick(s, x.t0 + 5s).size() == 1);
  CHECK(x.demand["lock-00"].next_poll == x.t0 + 5s + 300s);
  x.done("lock-00");
  CHECK(x.pick(s, x.t0 + 200s).empty());
  CHECK(x.pick(s, x.t0 + 305s).size() == 1);
}

TEST_CASE("ble scheduler: a failing lock backs off, doubling to 30 s, and others go first") {
  radio_scheduler s{1, 300s};
  site x{2};
  auto& bad = x.demand["lock-00"];
  bad.wants(x.t0 - 60s); // waiting longest
  x.demand["lock-01"].wants(x.t0);
  CHECK(radio_scheduler::backoff(1) == 500ms);
  CHECK(radio_scheduler::backoff(2) == 1000ms);
  CHECK(radio_scheduler::backoff(7) == 30'000ms);
  CHECK(radio_scheduler::backoff(40) == 30'000ms);

  REQUIRE(x.pick(s, x.t0) == std::vector<std::string>{"lock-00"});
  x.busy.erase("lock-00");
  radio_scheduler::failed(bad, x.t0); // connection failed: 500 ms
  CHECK(bad.retry_at == x.t0 + 500ms);
  // In its backoff the other lock is chosen although it waited less.
  CHECK(x.pick(s, x.t0 + 100ms) == std::vector<std::string>{"lock-01"});
  x.done("lock-01");
  CHECK(x.pick(s, x.t0 + 400ms).empty());
  CHECK(x.pick(s, x.t0 + 500ms) == std::vector<std::string>{"lock-00"});
  x.busy.erase("lock-00");
  for (int i = 0; i < 10; ++i)
    radio_scheduler::failed(bad, x.t0 + 1s);
  CHECK(bad.retry_at == x.t0 + 1s + 30s);
  // A working link resets the backoff.
  radio_scheduler::succeeded(bad);
  radio_scheduler::failed(bad, x.t0 + 2s);
  CHECK(bad.retry_at == x.t0 + 2s + 500ms);
}

TEST_CASE("ble scheduler: 20 locks that all want the radio are each served once before any "
          "twice, even if one wants it again at once") {
  radio_scheduler s{2, 300s};
  site x{20};
  for (int i = 0; i < 20; ++i) {
    auto id = std::string{"lock-"} + (i < 10 ? "0" : "") + std::to_string(i);
    x.demand[id].wants(x.t0 + std::chrono::milliseconds{i}); // in the order they advertised
  }
  std::map<std::string, int> visits;
  auto now = x.t0 + 1s;
  for (int round = 0; round < 10; ++round) {
    auto chosen = x.pick(s, now);
    REQUIRE(chosen.size() == 2);
    for (const auto& id : chosen) {
      ++visits[id];
      x.done(id);
    }
    // lock-00 (a busy door) has something new every time it is released:
    // it waits again, from now, behind the locks already waiting.
    now += 1s;
    x.demand["lock-00"].wants(now);
  }
  CHECK(visits.size() == 20);
  for (const auto& [id, n] : visits) {
    CAPTURE(id);
    CHECK(n == 1);
  }
  // The next round serves lock-00 again (it waits longest now).
  auto chosen = x.pick(s, now);
  CHECK(std::find(chosen.begin(), chosen.end(), "lock-00") != chosen.end());
}

TEST_CASE("ble scheduler: an unknown device or a lock with a link is not chosen") {
  radio_scheduler s{4, 300s};
  radio_demand a, b;
  a.wants(std::chrono::steady_clock::now());
  b.wants(std::chrono::steady_clock::now());
  std::vector<radio_scheduler::candidate> c{{"a", &a, false, false}, {"b", &b, true, false}};
  auto chosen = s.pick(c, 0, std::chrono::steady_clock::now());
  CHECK(chosen == std::vector<std::string>{"b"});
}

} // TEST_SUITE
