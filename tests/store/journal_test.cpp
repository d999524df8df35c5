#include "store/journal.hpp"
#include "store/commands.hpp"

#include "tests/store/helpers.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <random>

using namespace lockbridge;
using namespace lockbridge::store;
using lockbridge::test::ring;
using lockbridge::test::temp_dir;

namespace {

append_request batch(const std::string& lock, std::uint64_t from, std::uint64_t to,
                     std::int64_t received_at = 1000) {
  append_request req{lock, {}};
  for (auto s = from; s <= to; ++s)
    req.records.push_back(protocol::journal_record{lock, s, 1, "door_open", "d", std::nullopt,
                                                   std::nullopt, received_at});
  return req;
}

constexpr std::uint64_t map_size = 64ull << 20;

} // namespace

TEST_SUITE("store") {

TEST_CASE("journal: appends are read back in order and survive reopening") {
  temp_dir dir;
  {
    auto env = std::make_shared<environment>(dir.path, map_size);
    journal j{env, ring(env), {}};
    std::vector<append_request> reqs{batch("a", 1, 3), batch("b", 1, 2)};
    auto out = j.append(reqs);
    REQUIRE(out.size() == 2);
    CHECK(out[0].acked_seq == 3);
    CHECK(out[0].stored == 3);
    CHECK(out[1].acked_seq == 2);
  }
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  auto entries = j.read(0, 100);
  REQUIRE(entries.size() == 5);
  CHECK(entries[0].record.lock == "a");
  CHECK(entries[2].record.seq == 3);
  CHECK(entries[3].record.lock == "b");
  for (std::size_t i = 1; i < entries.size(); ++i)
    CHECK(entries[i].key > entries[i - 1].key);
  CHECK(j.progress("a") == 3);
  CHECK(j.figures().depth == 5);
}

TEST_CASE("journal: a store keeps its environment open after its opener lets go") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  std::weak_ptr<environment> watch = env;
  auto j = std::make_unique<journal>(env, ring(env), journal_limits{});
  env.reset(); // the opener (a vault, a tool) lets go first
  REQUIRE_FALSE(watch.expired());
  std::vector<append_request> reqs{batch("a", 1, 2)};
  CHECK(j->append(reqs).at(0).acked_seq == 2);
  CHECK(j->read(0, 10).size() == 2);
  j.reset();
  CHECK(watch.expired()); // closed with the last store that used it
}

TEST_CASE("journal: a store cannot be built without an environment") {
  CHECK_THROWS_AS(command_ids{nullptr}, store_error);
}

TEST_CASE("journal: the gateway's own events are numbered after their stream's progress") {
  temp_dir dir;
  {
    auto env = std::make_shared<environment>(dir.path, map_size);
    journal j{env, ring(env), {}};
    auto first = batch("a.access", 0, 1);  // seq 0 and 1 as given: ignored
    first.assign_seq = true;
    auto second = batch("a.access", 0, 0);
    second.assign_seq = true;
    std::vector<append_request> reqs{first, second};
    auto out = j.append(reqs);
    CHECK(out[0].acked_seq == 2);
    CHECK(out[1].acked_seq == 3);
  }
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  auto again = batch("a.access", 0, 0);
  again.assign_seq = true;
  std::vector<append_request> reqs{again};
  CHECK(j.append(reqs)[0].acked_seq == 4);
  auto entries = j.read(0, 100);
  REQUIRE(entries.size() == 4);
  for (std::size_t i = 0; i < entries.size(); ++i)
    CHECK(entries[i].record.seq == i + 1);
}

TEST_CASE("journal: events waiting are counted per lock, its decisions with it, bounded") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  auto decisions = batch("a.access", 0, 1);
  decisions.assign_seq = true;
  std::vector<append_request> reqs{batch("a", 1, 3), batch("b", 1, 2), decisions};
  j.append(reqs);
  auto all = j.pending_by_lock(100);
  CHECK(all.complete);
  CHECK(all.read == 7);
  CHECK(all.by_lock == std::map<std::string, std::uint64_t, std::less<>>{{"a", 5}, {"b", 2}});
  j.remove_upto(j.read(0, 4).back().key); // a's three events and one of b's
  all = j.pending_by_lock(100);
  CHECK(all.by_lock == std::map<std::string, std::uint64_t, std::less<>>{{"a", 2}, {"b", 1}});
  auto some = j.pending_by_lock(2);
  CHECK_FALSE(some.complete);
  CHECK(some.read == 2);
  CHECK(some.by_lock == std::map<std::string, std::uint64_t, std::less<>>{{"b", 1}, {"a", 1}});
}

TEST_CASE("journal: a repeated seq is stored once and acknowledged again") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  std::vector<append_request> first{batch("a", 1, 5)};
  j.append(first);
  std::vector<append_request> retry{batch("a", 3, 8)};
  auto out = j.append(retry);
  CHECK(out[0].acked_seq == 8);
  CHECK(out[0].stored == 3);
  CHECK(out[0].duplicates == 3);
  std::vector<append_request> again{batch("a", 1, 2)};
  out = j.append(again);
  CHECK(out[0].stored == 0);
  CHECK(out[0].acked_seq == 8);
  CHECK(j.read(0, 100).size() == 8);
}

TEST_CASE("journal: two batches of one lock in one group keep seq order") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  std::vector<append_request> group{batch("a", 1, 4), batch("a", 1, 6)};
  auto out = j.append(group);
  CHECK(out[0].stored == 4);
  CHECK(out[1].stored == 2);
  CHECK(out[1].duplicates == 4);
  auto entries = j.read(0, 100);
  REQUIRE(entries.size() == 6);
  for (std::size_t i = 0; i < 6; ++i)
    CHECK(entries[i].record.seq == i + 1);
}

TEST_CASE("journal: remove_upto removes the acknowledged prefix only") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  std::vector<append_request> reqs{batch("a", 1, 10)};
  j.append(reqs);
  auto entries = j.read(0, 100);
  j.remove_upto(entries[3].key);
  auto left = j.read(0, 100);
  REQUIRE(left.size() == 6);
  CHECK(left.front().record.seq == 5);
  CHECK(j.figures().depth == 6);
  auto from_middle = j.read(entries[7].key, 100);
  CHECK(from_middle.size() == 3);
  CHECK(j.progress("a") == 10); // progress outlives removal: no re-storing
  std::vector<append_request> old{batch("a", 1, 10)};
  CHECK(j.append(old)[0].stored == 0);
}

TEST_CASE("journal: a full journal refuses new batches and keeps what it has") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), journal_limits{4096}};
  std::uint64_t seq = 1;
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    std::vector<append_request> reqs{batch("a", seq, seq + 4)};
    auto out = j.append(reqs);
    if (out[0].result == append_outcome::status::refused_full) {
      refused = true;
      CHECK(out[0].acked_seq == seq - 1);
      CHECK(out[0].stored == 0);
    } else {
      seq += 5;
    }
  }
  REQUIRE(refused);
  auto depth = j.figures().depth;
  CHECK(depth == seq - 1);
  CHECK(j.figures().bytes <= 4096);
  // Draining makes room again.
  auto entries = j.read(0, 1000);
  j.remove_upto(entries.back().key);
  std::vector<append_request> reqs{batch("a", seq, seq + 4)};
  CHECK(j.append(reqs)[0].result == append_outcome::status::stored);
}

TEST_CASE("journal: retention purges entries received before the cutoff") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  std::vector<append_request> reqs{batch("a", 1, 3, 100), batch("b", 1, 2, 200),
                                   batch("c", 1, 1, 300)};
  j.append(reqs);
  CHECK(j.purge_received_before(250) == 5);
  auto left = j.read(0, 100);
  REQUIRE(left.size() == 1);
  CHECK(left[0].record.lock == "c");
  CHECK(j.figures().depth == 1);
  CHECK(j.purge_received_before(250) == 0);
}

TEST_CASE("journal: a second process on the same state is refused clearly") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  CHECK_THROWS_WITH_AS(environment(dir.path, map_size), doctest::Contains("another lockbridge"),
                       store_error);
}

TEST_CASE("journal: a damaged data file is refused with a store error") {
  temp_dir bad;
  std::ofstream{bad.path / "data.mdb"} << "this is not an LMDB file, it is text of some length"
                                       << std::string(8192, 'x');
  CHECK_THROWS_AS(environment(bad.path, map_size), store_error);
}

}
