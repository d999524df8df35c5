// The commands actor on CAF's testing scheduler, with a real vault and a
// fake lock transport (the test plays the lock's side: it decides when and
// how each command ends). One result per command, whatever happens: refusals
// (replay, expired, unknown lock), the lock's answer, a lock that never
// connects, and the resumption of commands accepted before a stop.

#include "actors/commands.hpp"

#include <doctest/doctest.h>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/clock_guard.hpp"
#include "protocols/lock_commands.hpp"
#include "tests/actors/harness.hpp"

using namespace lockbridge;
using lockbridge::test::actor_fixture;
using lockbridge::test::vault_dir;

namespace {

/// The lock's side: every command sent is kept until the test ends it.
class fake_locks final : public transport::lock_transport {
public:
  struct sent {
    std::string lock;
    protocol::lock_command command;
    std::chrono::steady_clock::time_point deadline;
    transport::command_callback done;
  };
  std::vector<sent> commands;

  void start() override {}
  void stop() override {}
  void complete(transport::request_id, transport::events_reply) override {}
  void send_command(const std::string& lock, std::vector<std::uint8_t> body,
                    std::chrono::steady_clock::time_point deadline,
                    transport::command_callback done) override {
    auto decoded = protocol::decode_lock_request(body);
    REQUIRE(decoded);
    commands.push_back({lock, *decoded, deadline, std::move(done)});
  }
  [[nodiscard]] std::map<std::string, std::int64_t, std::less<>> last_seen() const override {
    return {};
  }
  [[nodiscard]] transport::refusal_report refusals() const override { return {}; }
  [[nodiscard]] std::string_view kind() const noexcept override { return "fake"; }

  /// The lock answers command `i` (2.04 with its CBOR answer).
  void answer(std::size_t i, const std::string& result) {
    transport::command_outcome o;
    o.result = transport::command_outcome::kind::answered;
    o.code = 204;
    o.attempts = 1;
    o.payload = protocol::encode_lock_answer({commands.at(i).command.id, result, std::nullopt});
    commands.at(i).done(std::move(o));
  }
  void end(std::size_t i, transport::command_outcome::kind how, std::uint32_t attempts) {
    transport::command_outcome o;
    o.result = how;
    o.attempts = attempts;
    commands.at(i).done(std::move(o));
  }
};

nlohmann::json lock_command(const std::string& id, const std::string& lock,
                            std::int64_t expires_in_ms = 30'000) {
  return {{"schema", "lockbridge/lock-command/1"}, {"id", id},
          {"lock", lock},                          {"op", "unlock"},
          {"duration", 5},                         {"expires_at", protocol::unix_ms_now() + expires_in_ms}};
}

struct commands_fixture : actor_fixture {
  commands_fixture() { configure(); }

  void configure() {
    auto out = results;
    cfg.vault = state.vault;
    cfg.server = locks;
    cfg.site = "site-1";
    cfg.gateway = "gw-1";
    cfg.is_lock = [](const std::string& lock) { return lock == "lock-01" || lock == "lock-02"; };
    cfg.publish_result = [out](const command_reply_ptr& r) {
      auto doc = nlohmann::json::parse(r->payload);
      // The typed reply says what the JSON says: nobody reads it again.
      CHECK(r->id == doc.value("id", ""));
      CHECK(r->final == (doc["status"] != "pending"));
      out->push_back({r->number, std::move(doc)});
    };
  }

  void start() {
    REQUIRE(!validate(cfg));
    handle = spawn(lockbridge::commands, cfg);
    run();
  }

  void send(const nlohmann::json& payload) {
    caf::anon_send(handle, atom::command_v, std::string{"lock"}, payload.dump());
    run();
  }

  /// The results published for command `id`.
  std::vector<nlohmann::json> results_for(const std::string& id) const {
    std::vector<nlohmann::json> out;
    for (const auto& [number, r] : *results)
      if (r["id"] == id)
        out.push_back(r);
    return out;
  }

  vault_dir state;
  std::shared_ptr<fake_locks> locks = std::make_shared<fake_locks>();
  std::shared_ptr<std::vector<std::pair<std::uint64_t, nlohmann::json>>> results =
    std::make_shared<std::vector<std::pair<std::uint64_t, nlohmann::json>>>();
  commands_config cfg;
  commands_actor handle;
};

} // namespace

TEST_SUITE("actors") {

TEST_CASE("commands: an accepted command reaches its lock once, and its answer is the one "
          "result, kept in the outbox") {
  commands_fixture f;
  f.start();
  f.send(lock_command("cmd-1", "lock-01"));
  REQUIRE(f.locks->commands.size() == 1);
  CHECK(f.locks->commands[0].lock == "lock-01");
  CHECK(f.locks->commands[0].command.id == "cmd-1");
  CHECK(f.results->empty()); // nothing until the lock answers

  f.locks->answer(0, "done");
  f.run();
  auto r = f.results_for("cmd-1");
  REQUIRE(r.size() == 1);
  CHECK(r[0]["status"] == "ok");
  CHECK(r[0]["receipt"]["lock"] == "lock-01");
  CHECK(r[0]["receipt"]["attempts"] == 1);
  // Announced from the outbox (a number), so that a restart loses none.
  CHECK(f.results->at(0).first > 0);
  CHECK(f.state.vault->results->size() == 1);
  // A late second outcome for the same command publishes nothing more.
  f.locks->end(0, transport::command_outcome::kind::no_answer, 2);
  f.run();
  CHECK(f.results_for("cmd-1").size() == 1);
}

TEST_CASE("commands: a replayed id is refused and not sent again") {
  commands_fixture f;
  f.start();
  f.send(lock_command("cmd-1", "lock-01"));
  f.locks->answer(0, "done");
  f.run();
  f.send(lock_command("cmd-1", "lock-01"));
  CHECK(f.locks->commands.size() == 1);
  auto r = f.results_for("cmd-1");
  REQUIRE(r.size() == 2);
  CHECK(r[1]["status"] == "error");
  CHECK(r[1]["error"]["field"] == "id");
  // Still refused after the first was answered and with another lock.
  f.send(lock_command("cmd-1", "lock-02"));
  CHECK(f.locks->commands.size() == 1);
  CHECK(f.results_for("cmd-1").size() == 3);
}

TEST_CASE("commands: expired, too long-lived, unknown-lock and malformed commands are "
          "refused, each with one result naming the field") {
  commands_fixture f;
  f.start();
  f.send(lock_command("old", "lock-01", -5'000));
  f.send(lock_command("far", "lock-01", 11 * 60'000));
  f.send(lock_command("who", "lock-99"));
  auto bad = lock_command("bad", "lock-01");
  bad["op"] = "explode";
  f.send(bad);
  CHECK(f.locks->commands.empty());
  for (auto [id, field] : {std::pair{"old", "expires_at"}, std::pair{"far", "expires_at"},
                           std::pair{"who", "lock"}, std::pair{"bad", "op"}}) {
    CAPTURE(id);
    auto r = f.results_for(id);
    REQUIRE(r.size() == 1);
    CHECK(r[0]["status"] == "error");
    CHECK(r[0]["error"]["field"] == field);
  }
  // A refused command's id is not remembered: it may be sent again, fixed.
  f.send(lock_command("who", "lock-01"));
  CHECK(f.locks->commands.size() == 1);
}

TEST_CASE("commands: a lock that never connects or never answers gives a timeout result") {
  commands_fixture f;
  f.start();
  f.send(lock_command("c-1", "lock-01"));
  f.send(lock_command("c-2", "lock-02"));
  REQUIRE(f.locks->commands.size() == 2);
  // The transport ends each by the deadline it was given: the command's own.
  auto lifetime = f.locks->commands[0].deadline - std::chrono::steady_clock::now();
  CHECK(lifetime > std::chrono::seconds{25});
  CHECK(lifetime <= std::chrono::seconds{30});
  f.locks->end(0, transport::command_outcome::kind::not_connected, 0);
  f.locks->end(1, transport::command_outcome::kind::no_answer, 3);
  f.run();
  auto r1 = f.results_for("c-1");
  REQUIRE(r1.size() == 1);
  CHECK(r1[0]["status"] == "timeout");
  CHECK(r1[0]["detail"].get<std::string>().find("did not connect") != std::string::npos);
  auto r2 = f.results_for("c-2");
  REQUIRE(r2.size() == 1);
  CHECK(r2[0]["status"] == "timeout");
  CHECK(r2[0]["receipt"]["attempts"] == 3);
}

TEST_CASE("commands: an answer that names another command or refuses is reported as failed") {
  commands_fixture f;
  f.start();
  f.send(lock_command("c-1", "lock-01"));
  f.send(lock_command("c-2", "lock-01"));
  transport::command_outcome o;
  o.result = transport::command_outcome::kind::answered;
  o.code = 204;
  o.attempts = 1;
  o.payload = protocol::encode_lock_answer({"c-2", "done", std::nullopt}); // c-1's answer names c-2
  f.locks->commands[0].done(o);
  o.code = 403;
  o.payload.clear();
  f.locks->commands[1].done(o);
  f.run();
  CHECK(f.results_for("c-1").at(0)["status"] == "failed");
  CHECK(f.results_for("c-2").at(0)["status"] == "failed");
  CHECK(f.results_for("c-2").at(0)["detail"] == "the lock answered 4.03");
}

TEST_CASE("commands: after a stop, unanswered commands are sent again if still alive, "
          "answered failed otherwise") {
  commands_fixture f;
  f.start();
  f.send(lock_command("alive", "lock-01", 60'000));
  f.send(lock_command("gone", "lock-02", 60'000));
  f.send(lock_command("done", "lock-01", 60'000));
  f.locks->answer(2, "done");
  f.run();
  REQUIRE(f.locks->commands.size() == 3);
  // The gateway stops: the actor and its fake transport go; the vault stays.
  caf::anon_send_exit(f.handle, caf::exit_reason::user_shutdown);
  f.run();
  f.results->clear();
  f.locks = std::make_shared<fake_locks>();
  f.configure();
  f.cfg.is_lock = [](const std::string& lock) { return lock == "lock-01"; }; // lock-02 removed
  // One accepted before the stop whose lifetime ended while the gateway
  // was down (stored as the actor stores it, with an expiry now past).
  auto dies = protocol::decode_lock_command(lock_command("dies", "lock-01").dump());
  REQUIRE(dies);
  dies->expires_at = protocol::unix_ms_now() - 1'000;
  REQUIRE(f.state.vault->commands->remember(dies->id, dies->expires_at, dies->lock,
                                            protocol::encode_lock_request(*dies)));
  f.start();

  REQUIRE(f.locks->commands.size() == 1);
  CHECK(f.locks->commands[0].command.id == "alive");
  CHECK(f.results_for("alive").empty());
  auto died = f.results_for("dies");
  REQUIRE(died.size() == 1);
  CHECK(died[0]["status"] == "failed");
  CHECK(died[0]["detail"].get<std::string>().find("expired") != std::string::npos);
  auto gone = f.results_for("gone");
  REQUIRE(gone.size() == 1);
  CHECK(gone[0]["detail"].get<std::string>().find("no longer configured") != std::string::npos);
  CHECK(f.results_for("done").empty());
  f.locks->answer(0, "done");
  f.run();
  CHECK(f.results_for("alive").size() == 1);
}

} // TEST_SUITE
