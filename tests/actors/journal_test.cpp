// The journal actor on CAF's testing scheduler, with a real LMDB journal:
// group commit, the answers to locks, a full journal, held access decisions,
// removals and the retry after a refusal.

#include "actors/journal.hpp"

#include <doctest/doctest.h>

#include <caf/all.hpp>

#include "protocols/clock_guard.hpp"
#include "tests/actors/harness.hpp"

using namespace lockbridge;
using lockbridge::test::actor_fixture;
using lockbridge::test::vault_dir;

namespace {

store::append_request batch(const std::string& lock, std::uint64_t from, std::uint64_t to,
                            std::size_t detail_bytes = 8) {
  store::append_request req{lock, {}, false};
  for (auto s = from; s <= to; ++s)
    req.records.push_back(protocol::journal_record{lock, s, 1000 + static_cast<std::int64_t>(s),
                                                   "door_open", std::string(detail_bytes, 'd'),
                                                   std::nullopt, std::nullopt,
                                                   protocol::unix_ms_now()});
  return req;
}

/// An access decision as the gateway journals it (request id 0).
store::append_request decision(const std::string& lock) {
  auto req = batch(lock + ".access", 0, 0);
  req.assign_seq = true;
  return req;
}

append_ptr ptr(store::append_request r) {
  return std::make_shared<store::append_request>(std::move(r));
}

/// What the journal told its peers.
struct journal_peers {
  std::vector<std::pair<std::uint64_t, store::append_outcome>> replies;
  std::vector<std::uint64_t> committed;
};

/// A reader as the uplink is one: one request for commits open at a time.
void await_commits(caf::event_based_actor* self, const journal_actor& journal,
                   const std::shared_ptr<journal_peers>& to, std::uint64_t from) {
  self->request(journal, caf::infinite, atom::committed_v, from)
    .then([self, journal, to](std::uint64_t next) {
      to->committed.push_back(next);
      await_commits(self, journal, to, next);
    });
}

struct journal_fixture : actor_fixture {
  explicit journal_fixture(std::uint64_t journal_max_bytes = 64ull << 20)
    : state{journal_max_bytes} {
    auto seen = peers;
    journal_config cfg;
    cfg.store = state.vault->events;
    cfg.health = std::shared_ptr<store::storage_health>(state.vault, &state.vault->storage);
    cfg.audit = state.vault->audit;
    cfg.results = state.vault->results;
    cfg.vault = state.vault;
    cfg.reply = [seen](std::uint64_t request, const store::append_outcome& o) {
      seen->replies.emplace_back(request, o);
    };
    REQUIRE(!validate(cfg));
    journal_handle = spawn(lockbridge::journal, cfg);
    reader = spawn(
      [](caf::event_based_actor* self, journal_actor journal, std::shared_ptr<journal_peers> to,
         std::uint64_t from) -> caf::behavior {
        await_commits(self, journal, to, from);
        return {[](atom::tick) {}};
      },
      journal_handle, seen, state.vault->events->next_key());
    run();
  }

  journal_state& st() { return state_of<journal_state>(journal_handle); }

  vault_dir state;
  std::shared_ptr<journal_peers> peers = std::make_shared<journal_peers>();
  journal_actor journal_handle;
  caf::actor reader;
};

/// Fills the journal until lock-a's batches are refused, first big ones,
/// then single small events: not even one more event fits. Returns the
/// next seq of lock-a and the next request id.
std::pair<std::uint64_t, std::uint64_t> fill(journal_fixture& f) {
  std::uint64_t request = 1;
  std::uint64_t seq = 1;
  for (auto [per_batch, bytes] : {std::pair{10, 400}, std::pair{1, 8}}) {
    for (int i = 0; i < 1000; ++i) {
      auto last = seq + static_cast<std::uint64_t>(per_batch) - 1;
      caf::anon_send(f.journal_handle, atom::append_v, request++,
                     ptr(batch("lock-a", seq, last, static_cast<std::size_t>(bytes))));
      f.run();
      if (f.peers->replies.back().second.result == store::append_outcome::status::refused_full)
        break;
      seq = last + 1;
    }
  }
  REQUIRE(f.peers->replies.back().second.result == store::append_outcome::status::refused_full);
  return {seq, request};
}

} // namespace

TEST_SUITE("actors") {

TEST_CASE("journal actor: appends that arrive together are one commit, answered in order") {
  journal_fixture f;
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{11}, ptr(batch("lock-a", 1, 3)));
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{12}, ptr(batch("lock-b", 1, 2)));
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{13}, ptr(batch("lock-a", 4, 4)));
  f.run();

  CHECK(f.st().counters.commits == 1);
  REQUIRE(f.peers->replies.size() == 3);
  CHECK(f.peers->replies[0].first == 11);
  CHECK(f.peers->replies[0].second.acked_seq == 3);
  CHECK(f.peers->replies[1].first == 12);
  CHECK(f.peers->replies[1].second.acked_seq == 2);
  CHECK(f.peers->replies[2].first == 13);
  CHECK(f.peers->replies[2].second.acked_seq == 4);
  // One notice for the commit: keys below it exist, and they are durable.
  REQUIRE(f.peers->committed.size() == 1);
  CHECK(f.peers->committed[0] == f.state.vault->events->next_key());
  CHECK(f.state.vault->events->figures().depth == 6);

  // A second burst is a second commit.
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{14}, ptr(batch("lock-b", 3, 3)));
  f.run();
  CHECK(f.st().counters.commits == 2);
  CHECK(f.peers->committed.size() == 2);
}

TEST_CASE("journal actor: the gateway's own events are stored and answered to no one") {
  journal_fixture f;
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{0}, ptr(decision("lock-a")));
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{5}, ptr(batch("lock-b", 1, 1)));
  f.run();
  CHECK(f.state.vault->events->figures().depth == 2);
  // Only the lock's batch is answered: an access decision was answered on
  // the transport's thread already, and no empty reply goes back there.
  REQUIRE(f.peers->replies.size() == 1);
  CHECK(f.peers->replies[0].first == 5);
  CHECK(f.peers->committed.size() == 1);
}

TEST_CASE("journal actor: a reader that asks after entries exist is answered at once") {
  journal_fixture f;
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{1}, ptr(batch("lock-a", 1, 2)));
  f.run();
  auto answered = std::make_shared<std::vector<std::uint64_t>>();
  f.spawn(
    [](caf::event_based_actor* self, journal_actor journal,
       std::shared_ptr<std::vector<std::uint64_t>> out) -> caf::behavior {
      self->request(journal, caf::infinite, atom::committed_v, std::uint64_t{0})
        .then([out](std::uint64_t next) { out->push_back(next); });
      return {[](atom::tick) {}};
    },
    f.journal_handle, answered);
  f.run();
  REQUIRE(answered->size() == 1);
  CHECK(answered->at(0) == f.state.vault->events->next_key());
}

TEST_CASE("journal actor: a lock's resent events are acknowledged again, not stored twice") {
  journal_fixture f;
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{1}, ptr(batch("lock-a", 1, 5)));
  f.run();
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{2}, ptr(batch("lock-a", 3, 7)));
  f.run();
  REQUIRE(f.peers->replies.size() == 2);
  CHECK(f.peers->replies[1].second.acked_seq == 7);
  CHECK(f.peers->replies[1].second.stored == 2);
  CHECK(f.peers->replies[1].second.duplicates == 3);
  CHECK(f.state.vault->events->figures().depth == 7);
}

TEST_CASE("journal actor: the broker's acknowledgements remove entries, several per commit") {
  journal_fixture f;
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{1}, ptr(batch("lock-a", 1, 10)));
  f.run();
  auto entries = f.state.vault->events->read(0, 100);
  REQUIRE(entries.size() == 10);
  caf::anon_send(f.journal_handle, atom::remove_v, entries[3].key);
  caf::anon_send(f.journal_handle, atom::remove_v, entries[6].key);
  caf::anon_send(f.journal_handle, atom::remove_v, entries[2].key); // late, lower: no effect
  f.run();
  auto left = f.state.vault->events->read(0, 100);
  REQUIRE(left.size() == 3);
  CHECK(left[0].key == entries[7].key);
  CHECK(f.st().counters.commits == 2);
  CHECK(f.st().remove_upto == 0);
  // A removal stores nothing new: no commit notice.
  CHECK(f.peers->committed.size() == 1);
}

TEST_CASE("journal actor: acknowledged audit records and results are removed on its thread") {
  journal_fixture f;
  auto& v = *f.state.vault;
  for (int i = 0; i < 4; ++i)
    v.audit->append(1000 + i, "test", {{"i", i}});
  auto first = v.results->append(R"({"id":"c1"})");
  auto second = v.results->append(R"({"id":"c2"})");
  auto audit_records = v.audit->read(0, 10);
  REQUIRE(audit_records.size() == 4);
  caf::anon_send(f.journal_handle, atom::remove_v, atom::audit_v, audit_records[1].seq);
  caf::anon_send(f.journal_handle, atom::remove_v, atom::result_v, second);
  CHECK(v.audit->read(0, 10).size() == 4); // nothing happens before the actor runs
  f.run();
  auto left = v.audit->read(0, 10);
  REQUIRE(left.size() == 2);
  CHECK(left[0].seq == audit_records[2].seq);
  auto results = v.results->read(0, 10);
  REQUIRE(results.size() == 1);
  CHECK(results[0].number == first);
  CHECK_FALSE(f.st().removals_wait());
  CHECK(f.peers->committed.empty()); // no event was stored: no commit notice
}

TEST_CASE("journal actor: a full journal refuses locks' batches, holds access decisions, and "
          "takes them once the broker's acknowledgements free room") {
  // The smallest bound a vault takes.
  journal_fixture f{1ull << 20};
  auto [seq, request] = fill(f);
  CHECK(f.peers->replies.back().second.acked_seq == seq - 1); // not the refused one
  CHECK(f.st().counters.refused_full >= 1);

  // Another lock's batch: refused too (its lock keeps it and retries).
  auto replies_before = f.peers->replies.size();
  caf::anon_send(f.journal_handle, atom::append_v, request++, ptr(batch("lock-b", 1, 10, 400)));
  f.run();
  REQUIRE(f.peers->replies.size() == replies_before + 1);
  CHECK(f.peers->replies.back().second.result == store::append_outcome::status::refused_full);
  CHECK(f.peers->replies.back().second.acked_seq == 0);

  // An access decision (no lock resends it): not answered, held in memory.
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{0}, ptr(decision("lock-a")));
  f.run();
  CHECK(f.peers->replies.size() == replies_before + 1);
  CHECK(f.st().held.size() == 1);
  CHECK(f.st().retry_scheduled); // its retry

  // The broker acknowledges everything: the removal frees room, and the
  // held decision goes into that same commit (first, being the oldest).
  auto depth_before = f.state.vault->events->figures().depth;
  REQUIRE(depth_before > 0);
  caf::anon_send(f.journal_handle, atom::remove_v, f.state.vault->events->next_key() - 1);
  f.run();
  CHECK(f.st().held.empty());
  auto left = f.state.vault->events->read(0, 100);
  REQUIRE(left.size() == 1);
  CHECK(left[0].record.lock == "lock-a.access");
  CHECK(left[0].record.seq == 1);

  // The lock's retry is taken now.
  caf::anon_send(f.journal_handle, atom::append_v, request++, ptr(batch("lock-b", 1, 10, 400)));
  f.run();
  CHECK(f.peers->replies.back().second.result == store::append_outcome::status::stored);
  CHECK(f.peers->replies.back().second.acked_seq == 10);
}

TEST_CASE("journal actor: held access decisions are committed by the retry timer alone") {
  journal_fixture f{1ull << 20};
  fill(f);
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{0}, ptr(decision("lock-a")));
  f.run();
  REQUIRE(f.st().held.size() == 1);
  // Room made behind the actor's back (as erasure or retention would).
  f.state.vault->events->remove_upto(f.state.vault->events->next_key() - 1);
  // Nothing happens until the retry fires; then the decision is stored.
  f.run();
  CHECK(f.st().held.size() == 1);
  f.advance(std::chrono::seconds{5});
  CHECK(f.st().held.empty());
  auto left = f.state.vault->events->read(0, 10);
  REQUIRE(left.size() == 1);
  CHECK(left[0].record.lock == "lock-a.access");
}

TEST_CASE("journal actor: figures add the counters since start to the store's") {
  journal_fixture f;
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{1}, ptr(batch("lock-a", 1, 4)));
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{2}, ptr(batch("lock-a", 1, 4)));
  f.run();
  std::optional<journal_figures> got;
  auto asker = f.spawn(
    [&](caf::event_based_actor* self, const journal_actor& journal) {
      self->request(journal, caf::infinite, atom::figures_v)
        .then([&](const journal_figures& fig) { got = fig; });
    },
    f.journal_handle);
  f.run();
  REQUIRE(got);
  CHECK(got->depth == 4);
  CHECK(got->stored == 4);
  CHECK(got->duplicates == 4);
  CHECK(got->commits == 1);
  caf::anon_send_exit(asker, caf::exit_reason::user_shutdown);
}

TEST_CASE("journal actor: writes the audit records and quarantines the uplink hands it") {
  journal_fixture f;
  auto before = f.state.vault->audit->figures().count;
  caf::anon_send(f.journal_handle, atom::audit_v, std::string{"tls_reloaded"},
                 std::string{R"({"cert_file":"/etc/lockbridge/cert.pem"})"});
  f.run();
  CHECK(f.state.vault->audit->figures().count == before + 1);
  auto records = f.state.vault->audit->read(0, 1000);
  REQUIRE(!records.empty());
  CHECK(records.back().json.find("tls_reloaded") != std::string::npos);

  // Entries that open are never moved aside, whoever asks: nothing is
  // quarantined, counted or audited.
  caf::anon_send(f.journal_handle, atom::append_v, std::uint64_t{1}, ptr(batch("lock-a", 1, 3)));
  f.run();
  auto keys = std::make_shared<const std::vector<std::uint64_t>>(
    std::vector<std::uint64_t>{f.state.vault->events->read(0, 10).front().key});
  caf::anon_send(f.journal_handle, atom::quarantine_v, atom::events_v, keys);
  f.run();
  CHECK(f.state.vault->events->figures().depth == 3);
  CHECK(f.state.vault->quarantined == 0);
  CHECK(f.state.vault->audit->figures().count == before + 1);
}

} // TEST_SUITE
