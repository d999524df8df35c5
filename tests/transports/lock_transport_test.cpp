#include "transports/lock_transport.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace lockbridge::transport;

namespace {

/// A transport that records what it was asked (the set's routing is what is
/// under test here; the real transports have their integration tests).
struct recording final : lock_transport {
  explicit recording(std::string_view name = "coap") : name(name) {}
  std::string_view name;
  refusal_log log;
  std::vector<request_id> completed;
  std::vector<std::string> commanded;
  std::map<std::string, std::int64_t, std::less<>> seen;
  int started = 0;

  void start() override { ++started; }
  void stop() override { --started; }
  void complete(request_id id, events_reply) override { completed.push_back(id); }
  void send_command(const std::string& lock, std::vector<std::uint8_t>,
                    std::chrono::steady_clock::time_point, command_callback) override {
    commanded.push_back(lock);
  }
  std::map<std::string, std::int64_t, std::less<>> last_seen() const override { return seen; }
  refusal_report refusals() const override { return log.report(); }
  std::string_view kind() const noexcept override { return name; }
};

} // namespace

TEST_CASE("transport_set: answers go to the transport that asked, commands to the lock's") {
  auto coap = std::make_shared<recording>();
  auto ble = std::make_shared<recording>("ble");
  coap->seen = {{"lock-1", 10}};
  ble->seen = {{"ble-1", 20}};
  transport_set set;
  set.add(coap);
  set.add(ble);
  set.set_routes({{"lock-1", 0}, {"ble-1", 1}});
  set.start();
  CHECK(coap->started == 1);
  CHECK(ble->started == 1);

  set.complete(transport_set::id_base(0) + 5, {});
  set.complete(transport_set::id_base(1) + 5, {});
  set.complete(transport_set::id_base(7) + 1, {}); // no such member: dropped
  CHECK(coap->completed == std::vector<request_id>{5});
  CHECK(ble->completed == std::vector<request_id>{transport_set::id_base(1) + 5});

  auto deadline = std::chrono::steady_clock::now();
  set.send_command("ble-1", {}, deadline, [](command_outcome) {});
  set.send_command("lock-1", {}, deadline, [](command_outcome) {});
  CHECK(ble->commanded == std::vector<std::string>{"ble-1"});
  CHECK(coap->commanded == std::vector<std::string>{"lock-1"});

  // A lock no transport serves: ends at once, not connected.
  std::optional<command_outcome> outcome;
  set.send_command("nobody", {}, deadline, [&](command_outcome o) { outcome = o; });
  REQUIRE(outcome);
  CHECK(outcome->result == command_outcome::kind::not_connected);

  // A reload moves a lock to the other transport.
  set.set_routes({{"lock-1", 1}});
  set.send_command("lock-1", {}, deadline, [](command_outcome) {});
  CHECK(ble->commanded.back() == "lock-1");

  auto seen = set.last_seen();
  CHECK(seen.size() == 2);
  CHECK(seen["ble-1"] == 20);
  set.stop();
  CHECK(coap->started == 0);
}

TEST_CASE("refusal_log: each lock's last refusal, and strangers bounded, most recent first") {
  auto coap = std::make_shared<recording>();
  auto ble = std::make_shared<recording>("ble");
  transport_set set;
  set.add(coap);
  set.add(ble);
  set.set_routes({{"lock-1", 0}, {"ble-1", 1}});
  CHECK(set.transport_of() == std::map<std::string, std::string, std::less<>>{
                                {"ble-1", "ble"}, {"lock-1", "coap"}});

  coap->log.refused("lock-1", "max_sessions", "127.0.0.1:5000");
  coap->log.refused("lock-1", "wrong_key", "127.0.0.1:5001");
  ble->log.refused("ble-1", "forged", "AA:BB:CC:DD:EE:FF");
  auto r = set.refusals();
  REQUIRE(r.locks.size() == 2);
  CHECK(r.locks["lock-1"].reason == "wrong_key");
  CHECK(r.locks["lock-1"].peer == "127.0.0.1:5001");
  CHECK(r.locks["lock-1"].count == 2);
  CHECK(r.locks["lock-1"].at_ms > 0);
  CHECK(r.locks["ble-1"].reason == "forged");

  // An identity nobody has: kept printable, counted, at most max_strangers.
  coap->log.stranger("lock-1\n", "127.0.0.1:6000");
  coap->log.stranger("lock-1\n", "127.0.0.1:6001");
  auto strangers = set.refusals().strangers;
  REQUIRE(strangers.size() == 1);
  CHECK(strangers[0].identity.find('\n') == std::string::npos);
  CHECK(strangers[0].count == 2);
  CHECK(strangers[0].peer == "127.0.0.1:6001");
  for (int i = 0; i < 100; ++i)
    coap->log.stranger("s" + std::to_string(i), "127.0.0.1:7000");
  strangers = set.refusals().strangers;
  CHECK(strangers.size() == refusal_log::max_strangers);
  CHECK(strangers.front().identity == "s99");
}

TEST_CASE("answer_access: one decision path for every transport") {
  // {"cred": "C1", "door": "d1", "ts": 1}
  std::vector<std::uint8_t> query{0xa3, 0x64, 'c', 'r', 'e', 'd', 0x62, 'C', '1', 0x64, 'd', 'o', 'o',
                                  'r', 0x62, 'd', '1', 0x62, 't', 's', 0x01};
  lockbridge::protocol::access_decision allow;
  allow.allow = true;
  auto out = answer_access([&](const std::string&, const auto&) { return allow; }, "lock-1", query);
  CHECK(out.code == 205);
  REQUIRE(out.request);
  CHECK(out.request->cred == "C1");
  CHECK(out.decision.allow);

  auto bad = answer_access([&](const std::string&, const auto&) { return allow; }, "lock-1",
                           std::vector<std::uint8_t>{0xa0});
  CHECK(bad.code == 400);
  CHECK_FALSE(bad.request);
  CHECK(std::string(bad.body.begin(), bad.body.end()).find("cred") != std::string::npos);

  CHECK(answer_access(nullptr, "lock-1", query).code == 503);
  auto failing = answer_access(
    [](const std::string&, const auto&) -> lockbridge::protocol::access_decision {
      throw std::runtime_error{"disk gone"};
    },
    "lock-1", query);
  CHECK(failing.code == 500);
  CHECK(failing.error == "disk gone");
  CHECK_FALSE(failing.request);
}

TEST_CASE("check_events: one decode-and-refuse path for every transport") {
  lockbridge::protocol::event_batch batch;
  lockbridge::protocol::lock_event e;
  e.seq = 7;
  e.ts = 1'700'000'000'000;
  e.type = "access_granted";
  e.door = "d1";
  batch.events.push_back(e);
  auto wire = lockbridge::protocol::encode_event_batch(batch);
  lockbridge::transport::warn_limiter limiter;

  auto ok = check_events("test", "lock-1", wire, wire.size(), limiter);
  CHECK(ok.code == 0);
  REQUIRE(ok.batch);
  REQUIRE(ok.batch->events.size() == 1);
  CHECK(ok.batch->events[0].seq == 7);

  auto bad = check_events("test", "lock-1", std::vector<std::uint8_t>{0xa0}, 1, limiter);
  CHECK(bad.code == 400);
  CHECK_FALSE(bad.batch);
  CHECK(bad.error.find("events") != std::string::npos);

  // Announced larger than a lock may send: refused before decoding.
  auto big = check_events("test", "lock-1", wire,
                          lockbridge::protocol::lock_limits::max_payload_bytes + 1, limiter);
  CHECK(big.code == 413);
  CHECK_FALSE(big.batch);
  CHECK(big.error.find("exceeds") != std::string::npos);
  // The second refusal within 10 s was held back, and is counted.
  CHECK(limiter.held_back == 1);
}

TEST_CASE("hand_on_events: a handler that throws gets the request answered \"retry\" at once") {
  lockbridge::protocol::event_batch batch;
  request_id seen_id = 0;
  std::string seen_lock;
  events_handler takes = [&](request_id id, const std::string& lock, lockbridge::protocol::event_batch) {
    seen_id = id;
    seen_lock = lock;
  };
  CHECK_FALSE(hand_on_events(takes, 7, "door-1", batch).has_value());
  CHECK(seen_id == 7);
  CHECK(seen_lock == "door-1");

  events_handler throws = [](request_id, const std::string&, lockbridge::protocol::event_batch) {
    throw std::runtime_error{"HMAC failed"};
  };
  auto failed = hand_on_events(throws, 8, "door-1", batch);
  REQUIRE(failed.has_value());
  CHECK(failed->result == events_reply::kind::failed);
  CHECK(failed->diagnostic.find("retry") != std::string::npos);

  // No journal attached: the same answer, not a request left waiting.
  auto none = hand_on_events(events_handler{}, 9, "door-1", batch);
  REQUIRE(none.has_value());
  CHECK(none->result == events_reply::kind::failed);
}
