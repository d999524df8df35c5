// The uplink on CAF's testing scheduler, with a real LMDB journal and journal
// actor and a link of the test's own in place of Paho's: the test sees each
// connect, publish, subscription and disconnect the uplink asks for, and
// answers as a broker would (connected, PUBACK, refusal, lost link) when it
// chooses. The clock moves only when the test moves it.

#include "actors/uplink.hpp"

#include <doctest/doctest.h>

#include <fstream>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/journal.hpp"
#include "tests/actors/harness.hpp"
#include "tests/config/certs.hpp"

using namespace lockbridge;
using lockbridge::test::actor_fixture;
using lockbridge::test::vault_dir;

namespace {

/// A link that does what the uplink asks only on paper and answers when
/// the test says so.
struct test_link final : transport::mqtt_link {
  struct message {
    std::string topic;
    std::string payload;
    bool retained = false;
    std::uint64_t number = 0;
  };
  transport::mqtt_link_events events;
  std::vector<message> published;
  std::vector<std::uint64_t> connects;    ///< generations
  std::vector<std::uint64_t> disconnects; ///< generations
  std::vector<std::string> subscriptions;
  std::vector<std::pair<std::uint64_t, bool>> probes; ///< generation, decide
  std::size_t renewals = 0;
  bool refuse_publishes = false; ///< Paho's buffer is full, say

  void renew(const std::string&, bool, std::size_t, const std::string&) override { ++renewals; }
  transport::not_taken connect(std::uint64_t generation,
                               const transport::mqtt_connect_settings&) override {
    connects.push_back(generation);
    return std::nullopt;
  }
  transport::not_taken subscribe(const std::string& filter) override {
    subscriptions.push_back(filter);
    return std::nullopt;
  }
  transport::not_taken publish(transport::mqtt_outgoing m, std::uint64_t number) override {
    if (refuse_publishes)
      return "buffer full";
    published.push_back({std::move(m.topic), std::move(m.payload), m.retained, number});
    return std::nullopt;
  }
  transport::not_taken disconnect(std::uint64_t generation) override {
    disconnects.push_back(generation);
    return std::nullopt;
  }
  void probe(std::uint64_t generation, const std::string&, const transport::mqtt_tls_files&,
             bool decide) override {
    probes.emplace_back(generation, decide);
  }
  void close(const transport::mqtt_outgoing&) noexcept override {}

  /// What went out on `topic` (its publish numbers, in order).
  std::vector<message> on(const std::string& topic) const {
    std::vector<message> out;
    for (const auto& m : published)
      if (m.topic == topic)
        out.push_back(m);
    return out;
  }
};

/// The seqs of the events a published message carries ("1", "2,3").
std::string seqs_of(const test_link::message& m) {
  std::string out;
  auto doc = nlohmann::json::parse(m.payload);
  for (const auto& e : doc["events"])
    out += (out.empty() ? "" : ",") + std::to_string(e["seq"].get<std::uint64_t>());
  return out;
}

append_ptr events(const std::string& lock, std::uint64_t from, std::uint64_t to) {
  auto req = std::make_shared<store::append_request>();
  req->lock_id = lock;
  for (auto s = from; s <= to; ++s)
    req->records.push_back(protocol::journal_record{lock, s, 1000 + static_cast<std::int64_t>(s),
                                                    "door_open", "", std::nullopt, std::nullopt,
                                                    protocol::unix_ms_now()});
  return req;
}

const protocol::topics topics{"site-1", "gw-1"};
const std::string events_topic = topics.events();
const std::string result_topic = topics.cmd_result();

struct uplink_fixture : actor_fixture {
  vault_dir state;
  std::shared_ptr<test_link> link = std::make_shared<test_link>();
  journal_actor journal;
  uplink_actor up;
  std::uint64_t next_request = 1;
  std::filesystem::path tls_dir = state.dir.path / "tls";
  /// The configured locks and when each was last heard.
  std::shared_ptr<lock_presence::seen_list> seen = std::make_shared<lock_presence::seen_list>();

  /// `tls`: usable TLS files are in place at start.
  explicit uplink_fixture(std::uint32_t window = 2, bool tls = false) {
    journal_config jc;
    jc.store = state.vault->events;
    jc.health = std::shared_ptr<store::storage_health>(state.vault, &state.vault->storage);
    jc.audit = state.vault->audit;
    jc.results = state.vault->results;
    jc.vault = state.vault;
    jc.reply = [](std::uint64_t, const store::append_outcome&) {};
    REQUIRE(!validate(jc));
    journal = spawn(lockbridge::journal, jc);

    std::filesystem::create_directories(tls_dir);
    if (tls)
      write_tls();
    uplink_config uc;
    uc.site = "site-1";
    uc.gateway = "gw-1";
    uc.version = "test";
    uc.mqtt.brokers = {"mqtts://127.0.0.1:8883"};
    uc.mqtt.protocol = config::mqtt_protocol::v5;
    uc.mqtt.client_id = "gw-1";
    uc.mqtt.ca_file = tls_dir / "ca.pem";
    uc.mqtt.cert_file = tls_dir / "cert.pem";
    uc.mqtt.key_file = tls_dir / "key.pem";
    uc.mqtt.inflight_window = window;
    uc.mqtt.max_events_per_message = 1;
    uc.mqtt.keepalive_s = 10;
    uc.mqtt.status_interval_s = 3600;
    uc.mqtt.reconnect_min_ms = 100;
    uc.mqtt.reconnect_max_ms = 400;
    uc.store = state.vault->events;
    uc.vault = state.vault;
    uc.audit_interval = std::chrono::hours{1};
    uc.journal = journal;
    uc.locks_seen = [seen = seen] { return *seen; };
    uc.make_link = [l = link](transport::mqtt_link_events e) {
      l->events = std::move(e);
      return std::static_pointer_cast<transport::mqtt_link>(l);
    };
    REQUIRE(!validate(uc));
    up = spawn(lockbridge::uplink, uc);
    run();
  }

  uplink_state& st() { return state_of<uplink_state>(up); }

  /// Appends events seq from..to of `lock` and lets the journal commit them.
  void append(const std::string& lock, std::uint64_t from, std::uint64_t to) {
    caf::anon_send(journal, atom::append_v, next_request++, events(lock, from, to));
    run();
  }

  /// The broker takes the connect the uplink asked for last.
  void accept() {
    REQUIRE(!link->connects.empty());
    link->events.connected(link->connects.back());
    run();
  }

  void ack(std::uint64_t number) {
    link->events.acked(number);
    run();
  }

  /// Lets the removal timer fire (the uplink gathers removals).
  void settle() { advance(std::chrono::milliseconds{20}); }

  std::uint64_t depth() { return state.vault->events->figures().depth; }

  /// Writes a CA, certificate and key the TLS check accepts (new ones each
  /// time: a renewal).
  void write_tls() {
    auto [ca, ca_key] = test::make_cert(-1, 365, {}, "ca");
    auto [cert, key] = test::make_cert(-1, 365, {}, "gw-1");
    std::ofstream{tls_dir / "ca.pem"} << ca;
    std::ofstream{tls_dir / "cert.pem"} << cert;
    std::ofstream{tls_dir / "key.pem"} << key;
  }
};

} // namespace

TEST_SUITE("actors") {

TEST_CASE("uplink: events go out in journal order, no more than the window in flight") {
  uplink_fixture f{2};
  f.append("lock-a", 1, 5);
  CHECK(f.link->published.empty()); // not connected yet: the journal keeps them
  f.accept();
  CHECK(f.link->subscriptions == std::vector<std::string>{topics.prefix() + "cmd/#"});
  auto sent = f.link->on(events_topic);
  REQUIRE(sent.size() == 2);
  CHECK(seqs_of(sent[0]) == "1");
  CHECK(seqs_of(sent[1]) == "2");

  // Each PUBACK makes room for one more, in order.
  f.ack(sent[0].number);
  sent = f.link->on(events_topic);
  REQUIRE(sent.size() == 3);
  CHECK(seqs_of(sent[2]) == "3");
}

TEST_CASE("uplink: a PUBACK out of order removes nothing until the ones before it come") {
  uplink_fixture f{3};
  f.append("lock-a", 1, 3);
  f.accept();
  auto sent = f.link->on(events_topic);
  REQUIRE(sent.size() == 3);

  f.ack(sent[2].number);
  f.ack(sent[1].number);
  f.settle();
  CHECK(f.depth() == 3); // the first is not acknowledged: all three are kept
  CHECK(f.st().events_out == 0);

  f.ack(sent[0].number);
  f.settle();
  CHECK(f.depth() == 0);
  CHECK(f.st().events_out == 3);
  CHECK(f.link->on(events_topic).size() == 3); // nothing sent twice
}

TEST_CASE("uplink: a lost link sends again, after reconnecting, what was not acknowledged") {
  uplink_fixture f{2};
  f.append("lock-a", 1, 4);
  f.accept();
  auto first = f.link->on(events_topic);
  REQUIRE(first.size() == 2);
  f.ack(first[0].number);
  f.settle();
  CHECK(f.depth() == 3);

  auto connects = f.link->connects.size();
  f.link->events.lost(f.link->connects.back(), "connection lost: test");
  f.run();
  CHECK_FALSE(f.st().connected);
  // A late PUBACK of the lost link changes nothing.
  f.ack(first[1].number);
  f.settle();
  CHECK(f.depth() == 3);

  // The next attempt comes after the backoff (100 ms and up to a quarter
  // more), not at once.
  CHECK(f.link->connects.size() == connects);
  f.advance(std::chrono::milliseconds{130});
  REQUIRE(f.link->connects.size() == connects + 1);
  auto before = f.link->on(events_topic).size();
  f.accept();
  auto again = f.link->on(events_topic);
  REQUIRE(again.size() == before + 2);
  CHECK(seqs_of(again[before]) == "2"); // from the first unacknowledged
  CHECK(seqs_of(again[before + 1]) == "3");
  f.ack(again[before].number);
  f.ack(again[before + 1].number);
  f.settle();
  auto last = f.link->on(events_topic);
  REQUIRE(last.size() == before + 3);
  f.ack(last.back().number);
  f.settle();
  CHECK(f.depth() == 0);
  CHECK(f.st().events_out == 4);
}

TEST_CASE("uplink: a refused publish pauses publishing for a backoff, then sends it again") {
  uplink_fixture f{2};
  f.append("lock-a", 1, 2);
  f.accept();
  auto sent = f.link->on(events_topic);
  REQUIRE(sent.size() == 2);
  f.ack(sent[0].number);
  f.link->events.nacked(sent[1].number, 0x87); // not authorised
  f.run();
  CHECK(f.st().publishing_paused);
  CHECK(f.st().refused_publishes == 1);
  CHECK(f.link->on(events_topic).size() == 2); // not at once

  f.advance(std::chrono::milliseconds{100});
  auto again = f.link->on(events_topic);
  REQUIRE(again.size() == 3);
  CHECK(seqs_of(again[2]) == "2");

  // Refused again before any PUBACK: the pause doubles.
  f.link->events.nacked(again[2].number, 0x87);
  f.run();
  f.advance(std::chrono::milliseconds{100});
  CHECK(f.link->on(events_topic).size() == 3);
  f.advance(std::chrono::milliseconds{100});
  auto third = f.link->on(events_topic);
  REQUIRE(third.size() == 4);
  f.ack(third[3].number);
  f.settle();
  CHECK(f.depth() == 0);
  CHECK(f.st().refused_publishes == 2);
}

TEST_CASE("uplink: a publish the link cannot take now is sent by the next PUBACK") {
  uplink_fixture f{2};
  f.append("lock-a", 1, 1);
  f.accept();
  auto sent = f.link->on(events_topic);
  REQUIRE(sent.size() == 1);
  f.link->refuse_publishes = true;
  f.append("lock-a", 2, 2);
  CHECK(f.link->on(events_topic).size() == 1);
  f.link->refuse_publishes = false;
  f.ack(sent[0].number);
  auto again = f.link->on(events_topic);
  REQUIRE(again.size() == 2);
  CHECK(seqs_of(again[1]) == "2");
}

TEST_CASE("uplink: a broker that acknowledges nothing is left for a new client") {
  uplink_fixture f{2};
  f.append("lock-a", 1, 1);
  f.accept();
  REQUIRE(f.link->on(events_topic).size() == 1);
  auto clients = f.link->renewals;
  // 1.5 keep-alives (15 s) without a PUBACK: the stall check (every 2 s)
  // drops the link and makes a new client.
  f.advance(std::chrono::seconds{12});
  CHECK(f.st().connected);
  for (int i = 0; i < 3; ++i)
    f.advance(std::chrono::seconds{2});
  CHECK_FALSE(f.st().connected);
  CHECK(f.st().stalls == 1);
  CHECK(f.link->renewals == clients + 1);
  CHECK(f.link->probes.empty()); // the cause is known: no TLS probe
  f.advance(std::chrono::milliseconds{130});
  f.accept();
  auto sent = f.link->on(events_topic);
  REQUIRE(sent.size() == 2);
  CHECK(seqs_of(sent[1]) == "1");
}

TEST_CASE("uplink: an unknown command gets one error result, kept until its PUBACK") {
  uplink_fixture f{2};
  f.accept();
  f.link->events.arrived({topics.command("open_sesame"), R"({"id":"c-1"})", "", ""});
  f.run();
  auto results = f.link->on(result_topic);
  REQUIRE(results.size() == 1);
  auto doc = nlohmann::json::parse(results[0].payload);
  CHECK(doc["id"] == "c-1");
  CHECK(doc["status"] == "error");
  CHECK(f.state.vault->results->size() == 1);

  // Lost before its PUBACK: sent again after reconnecting, still once.
  f.link->events.lost(f.link->connects.back(), "connection lost: test");
  f.run();
  f.advance(std::chrono::milliseconds{130});
  f.accept();
  results = f.link->on(result_topic);
  REQUIRE(results.size() == 2);
  CHECK(results[1].payload == results[0].payload);
  f.ack(results[1].number);
  f.settle();
  CHECK(f.state.vault->results->size() == 0);
  CHECK(f.link->on(result_topic).size() == 2);
}

TEST_CASE("uplink: an MQTT 5 request's result goes to its response topic under replies/") {
  uplink_fixture f{2};
  f.accept();
  f.link->events.arrived({topics.command("nope"), R"({"id":"c-2"})",
                          topics.prefix() + "replies/app-7", "corr"});
  f.link->events.arrived({topics.command("nope"), R"({"id":"c-3"})",
                          protocol::topics{"other-site", "gw-9"}.events(), "corr"});
  f.run();
  CHECK(f.link->on(topics.prefix() + "replies/app-7").size() == 1);
  // Not this gateway's to write: the result goes to cmd_result.
  CHECK(f.link->on(protocol::topics{"other-site", "gw-9"}.events()).empty());
  CHECK(f.link->on(result_topic).size() == 1);
}

TEST_CASE("uplink: new TLS files: the old connection is left before the next connect") {
  uplink_fixture f{2, true};
  f.accept();
  f.append("lock-a", 1, 1);
  REQUIRE(f.link->on(events_topic).size() == 1);
  auto connects = f.link->connects.size();

  f.write_tls(); // a renewal dropped in place
  f.advance(std::chrono::seconds{2});
  REQUIRE(f.link->disconnects.size() == 1);
  CHECK_FALSE(f.st().connected);
  auto records = f.state.vault->audit->read(0, 1000);
  REQUIRE(!records.empty());
  CHECK(records.back().json.find("tls_reloaded") != std::string::npos);
  // No connect while the DISCONNECT is pending, even when a retry fires.
  caf::anon_send(f.up, atom::connect_v);
  f.run();
  CHECK(f.link->connects.size() == connects);

  f.link->events.left(f.link->disconnects.back());
  f.run();
  REQUIRE(f.link->connects.size() == connects + 1);
  f.accept();
  auto sent = f.link->on(events_topic);
  REQUIRE(sent.size() == 2);
  CHECK(seqs_of(sent[1]) == "1"); // not acknowledged: sent again
}

TEST_CASE("uplink: a disconnect that never ends is given up after 2 s for a new client") {
  uplink_fixture f{2, true};
  f.accept();
  auto connects = f.link->connects.size();
  auto clients = f.link->renewals;
  f.write_tls();
  f.advance(std::chrono::seconds{2});
  REQUIRE(f.link->disconnects.size() == 1);
  f.advance(std::chrono::seconds{2}); // no `left` from the link
  CHECK(f.link->renewals == clients + 1);
  CHECK(f.link->connects.size() == connects + 1);
  // The link's late word changes nothing.
  f.link->events.left(f.link->disconnects.back());
  f.run();
  CHECK(f.link->connects.size() == connects + 1);
}

TEST_CASE("uplink: the status goes out retained on connecting, and again after a lost link") {
  uplink_fixture f{2};
  f.accept();
  auto status = f.link->on(topics.status());
  REQUIRE(status.size() == 1);
  CHECK(status[0].retained);
  CHECK(nlohmann::json::parse(status[0].payload)["state"] == "online");
  f.link->events.lost(f.link->connects.back(), "connection lost: test");
  f.run();
  f.advance(std::chrono::milliseconds{130});
  f.accept();
  CHECK(f.link->on(topics.status()).size() == 2);
}

TEST_CASE("uplink: every lock's state goes out retained on connecting, and its own state") {
  uplink_fixture f{2};
  auto now = protocol::unix_ms_now();
  *f.seen = {{"lock-a", now}, {"lock-b", 0}};
  f.accept();
  auto a = f.link->on(topics.lock_state("lock-a"));
  auto b = f.link->on(topics.lock_state("lock-b"));
  REQUIRE(a.size() == 1);
  REQUIRE(b.size() == 1);
  CHECK(a[0].retained);
  CHECK(nlohmann::json::parse(a[0].payload)["available"] == true);
  CHECK(nlohmann::json::parse(b[0].payload)["available"] == false);

  (*f.seen)[1].second = now; // lock-b speaks: the transport notes it
  caf::anon_send(f.up, atom::observed_v, std::string{"lock-b"},
                 std::make_shared<const protocol::lock_state>(
                   protocol::lock_state{false, true, 42, "2.0"}));
  f.run();
  // Less than a second after lock-b's last message: it waits for the tick.
  CHECK(f.link->on(topics.lock_state("lock-b")).size() == 1);
  f.advance(std::chrono::seconds{2});
  b = f.link->on(topics.lock_state("lock-b"));
  REQUIRE(b.size() == 2);
  auto doc = nlohmann::json::parse(b[1].payload);
  CHECK(doc["available"] == true);
  CHECK(doc["state"]["battery"] == 42);
  CHECK(doc["state"]["door_open"] == true);

  // A reload removed lock-a: its retained message is deleted (empty payload).
  *f.seen = {{"lock-b", now}};
  f.advance(std::chrono::seconds{2});
  a = f.link->on(topics.lock_state("lock-a"));
  REQUIRE(a.size() == 2);
  CHECK(a[1].payload.empty());
  CHECK(a[1].retained);
}

} // TEST_SUITE
