// The keeper on CAF's testing scheduler with a real vault: erasure of a
// subject (credentials, index, pending events, receipt, audit), data-key
// rotation (pending, re-sealing in steps, the final result, one at a time),
// and the resumption of a rotation a stop interrupted.

#include "actors/keeper.hpp"

#include <doctest/doctest.h>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/clock_guard.hpp"
#include "tests/actors/harness.hpp"

using namespace lockbridge;
using lockbridge::test::actor_fixture;
using lockbridge::test::vault_dir;

namespace {

protocol::credential card_of(const std::string& subject) {
  protocol::credential c;
  c.subject = subject;
  c.doors = {"*"};
  c.version = 1;
  return c;
}

store::append_request event_by(const std::string& lock, std::uint64_t seq,
                               std::optional<std::string> cred) {
  store::append_request req{lock, {}, false};
  req.records.push_back(protocol::journal_record{lock, seq, 1000, "access_granted", "front",
                                                 std::move(cred), std::nullopt,
                                                 protocol::unix_ms_now()});
  return req;
}

struct keeper_fixture : actor_fixture {
  explicit keeper_fixture(std::size_t reseal_batch = 500) {
    auto out = published;
    cfg.vault = state.vault;
    cfg.site = "site-1";
    cfg.gateway = "gw-1";
    cfg.reseal_batch = reseal_batch;
    cfg.publish_result = [out](const command_reply_ptr& r) {
      auto doc = nlohmann::json::parse(r->payload);
      CHECK(r->id == doc.value("id", ""));
      CHECK(r->final == (doc["status"] != "pending"));
      CHECK(r->number > 0); // kept in the outbox before it is handed on
      out->push_back(std::move(doc));
    };
  }

  void start() {
    REQUIRE(!validate(cfg));
    handle = spawn(lockbridge::keeper, cfg);
    run();
  }

  /// Sends a command as the uplink does and returns the answer (after running).
  nlohmann::json command(const std::string& name, const nlohmann::json& payload) {
    std::optional<std::string> got;
    auto asker = spawn(
      [&](caf::event_based_actor* self, const keeper_actor& h) {
        self->request(h, caf::infinite, atom::command_v, name, payload.dump())
          .then([&](const std::string& json) { got = json; });
      },
      handle);
    run();
    caf::anon_send_exit(asker, caf::exit_reason::user_shutdown);
    run();
    REQUIRE(got);
    return nlohmann::json::parse(*got);
  }

  std::vector<std::string> audit_actions() {
    std::vector<std::string> out;
    for (const auto& e : state.vault->audit->read(0, 1000))
      out.push_back(nlohmann::json::parse(e.json).at("action").get<std::string>());
    return out;
  }

  keeper_state& st() { return state_of<keeper_state>(handle); }

  vault_dir state;
  keeper_config cfg;
  std::shared_ptr<std::vector<nlohmann::json>> published =
    std::make_shared<std::vector<nlohmann::json>>();
  keeper_actor handle;
};

} // namespace

TEST_SUITE("actors") {

TEST_CASE("keeper: erase_subject removes the subject's credentials and pending events, and "
          "answers with a receipt") {
  keeper_fixture f;
  auto& v = *f.state.vault;
  v.credentials->replace_all({{v.credentials->key_of("card-1"), card_of("sub-8812")},
                              {v.credentials->key_of("card-2"), card_of("sub-8812")},
                              {v.credentials->key_of("card-3"), card_of("sub-other")}},
                             1, protocol::unix_ms_now());
  auto p1 = (*v.pseudonyms)("card-1");
  auto p3 = (*v.pseudonyms)("card-3");
  std::vector<store::append_request> events{event_by("lock-a", 1, p1), event_by("lock-a", 2, p3),
                                            event_by("lock-a", 3, std::nullopt),
                                            event_by("lock-b", 1, p1)};
  v.events->append(events);
  f.start();

  auto r = f.command("erase_subject",
                     {{"schema", "lockbridge/erase-subject/1"}, {"id", "erase-17"},
                      {"subject", "sub-8812"}});
  CHECK(r["id"] == "erase-17");
  CHECK(r["status"] == "ok");
  auto receipt = r["receipt"];
  CHECK(receipt["credentials_removed"] == 2);
  CHECK(receipt["pending_events_removed"] == 2);
  CHECK(receipt["epochs_searched"] == 1);
  // The receipt names the subject by a pseudonym, never by its id.
  CHECK(receipt["subject"].get<std::string>().find("sub-8812") == std::string::npos);
  CHECK(r.dump().find("sub-8812") == std::string::npos);

  CHECK(!v.credentials->find(v.credentials->key_of("card-1")).credential);
  CHECK(!v.credentials->find(v.credentials->key_of("card-2")).credential);
  CHECK(v.credentials->find(v.credentials->key_of("card-3")).credential);
  auto left = v.events->read(0, 10);
  REQUIRE(left.size() == 2);
  CHECK(left[0].record.cred == p3);
  CHECK(!left[1].record.cred);

  // The same JSON went to cmd_result, and the audit trail has the erasure.
  REQUIRE(f.published->size() == 1);
  CHECK((*f.published)[0] == r);
  auto actions = f.audit_actions();
  CHECK(std::count(actions.begin(), actions.end(), "erase_subject") == 1);
  CHECK(v.erasures == 1);
}

TEST_CASE("keeper: an erase_subject that does not decode changes nothing and says which field") {
  keeper_fixture f;
  auto& v = *f.state.vault;
  v.credentials->replace_all({{v.credentials->key_of("card-1"), card_of("sub-1")}}, 1,
                             protocol::unix_ms_now());
  f.start();
  auto r = f.command("erase_subject", {{"schema", "lockbridge/erase-subject/1"}, {"id", "e-1"},
                                       {"subject", "sub-1"}, {"everything", true}});
  CHECK(r["status"] == "error");
  CHECK(r["id"] == "e-1");
  CHECK(r["error"]["field"] == "everything");
  CHECK(v.credentials->find(v.credentials->key_of("card-1")).credential);
  CHECK(v.erasures == 0);
}

TEST_CASE("keeper: a data-key rotation answers pending, re-seals in steps, then answers ok") {
  keeper_fixture f{2}; // two values per step: several steps
  auto& v = *f.state.vault;
  std::vector<store::append_request> events;
  for (std::uint64_t s = 1; s <= 9; ++s)
    events.push_back(event_by("lock-a", s, std::nullopt));
  v.events->append(events);
  auto first_key = v.keys->current();
  f.start();

  auto r = f.command("rotate_keys",
                     {{"schema", "lockbridge/rotate-keys/1"}, {"id", "rot-1"}, {"data_key", true}});
  CHECK(r["status"] == "pending");
  auto new_key = r["receipt"]["data_key"].get<std::uint32_t>();
  CHECK(new_key != first_key);
  // command() ran to quiescence: every step ran and the final result left.
  CHECK(!f.st().reseal);
  CHECK(!v.resealing);
  REQUIRE(f.published->size() == 2);
  CHECK((*f.published)[0] == r);
  const auto& done = (*f.published)[1];
  CHECK(done["id"] == "rot-1");
  CHECK(done["status"] == "ok");
  CHECK(done["receipt"]["retired"] == nlohmann::json::array({first_key}));
  CHECK(v.keys->ids() == std::vector<std::uint32_t>{new_key});
  // Every event opens under the one key left.
  auto entries = v.events->read(0, 100);
  CHECK(entries.size() == 9);
  auto actions = f.audit_actions();
  CHECK(std::count(actions.begin(), actions.end(), "data_key_rotated") == 1);
  CHECK(std::count(actions.begin(), actions.end(), "data_key_resealed") == 1);
}

TEST_CASE("keeper: a second data-key rotation while one re-seals is refused") {
  keeper_fixture f{1};
  auto& v = *f.state.vault;
  std::vector<store::append_request> events;
  for (std::uint64_t s = 1; s <= 5; ++s)
    events.push_back(event_by("lock-a", s, std::nullopt));
  v.events->append(events);
  f.start();
  // Both commands are in the mailbox before the first re-sealing step runs.
  std::vector<std::string> answers;
  auto asker = f.spawn([&](caf::event_based_actor* self, const keeper_actor& h) {
    for (auto id : {"rot-1", "rot-2"})
      self->request(h, caf::infinite, atom::command_v, std::string{"rotate_keys"},
                    nlohmann::json{{"schema", "lockbridge/rotate-keys/1"}, {"id", id},
                                   {"data_key", true}}
                      .dump())
        .then([&](const std::string& json) { answers.push_back(json); });
  }, f.handle);
  f.run();
  caf::anon_send_exit(asker, caf::exit_reason::user_shutdown);
  REQUIRE(answers.size() == 2);
  CHECK(nlohmann::json::parse(answers[0])["status"] == "pending");
  auto second = nlohmann::json::parse(answers[1]);
  CHECK(second["id"] == "rot-2");
  CHECK(second["status"] == "error");
  CHECK(second["detail"].get<std::string>().find("still re-sealing") != std::string::npos);
  CHECK(v.keys->ids().size() == 1);
}

TEST_CASE("keeper: a rotation interrupted by a stop resumes at start and retires the old key") {
  keeper_fixture f;
  auto& v = *f.state.vault;
  std::vector<store::append_request> events{event_by("lock-a", 1, std::nullopt),
                                            event_by("lock-a", 2, std::nullopt)};
  v.events->append(events);
  auto old_key = v.keys->current();
  auto new_key = v.keys->rotate(); // as rotate_keys did before the stop
  REQUIRE(v.keys->ids().size() == 2);
  f.start();
  CHECK(!f.st().reseal);
  CHECK(v.keys->ids() == std::vector<std::uint32_t>{new_key});
  CHECK(v.keys->ids() != std::vector<std::uint32_t>{old_key});
  CHECK(v.events->read(0, 10).size() == 2);
  // Not from a command: no result is published.
  CHECK(f.published->empty());
}

TEST_CASE("keeper: the periodic work runs at start and again after its interval") {
  keeper_fixture f;
  f.cfg.tick_interval = std::chrono::seconds{60};
  auto& v = *f.state.vault;
  // An audit record older than the retention: purged by the first tick.
  v.audit->append(protocol::unix_ms_now() - 91LL * 86'400'000, "config_reloaded", {{"n", 1}});
  f.start();
  CHECK(v.audit_purged == 1);
  // A command id whose command expired: remembered (a replay is refused)
  // until the next tick forgets it.
  auto expired = protocol::unix_ms_now() - 1'000;
  REQUIRE(v.commands->remember("cmd-old", expired));
  CHECK(!v.commands->remember("cmd-old", expired));
  f.advance(std::chrono::seconds{30});
  CHECK(!v.commands->remember("cmd-old", expired));
  f.advance(std::chrono::seconds{30});
  CHECK(v.commands->remember("cmd-old", expired));
}

} // TEST_SUITE
