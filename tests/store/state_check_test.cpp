// The checks that run before LMDB maps a state file: meta pages read by
// hand, the walk in a child process, the identity, and salvage.

#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include <lmdb.h>

#include "helpers.hpp"
#include "store/journal.hpp"
#include "store/state_check.hpp"
#include "store/vault.hpp"

using namespace lockbridge;
using namespace lockbridge::store;
using lockbridge::test::temp_dir;

namespace {

/// A state with `events` journalled events (one lock), closed.
void make_state(const std::filesystem::path& dir, int events) {
  vault_keys keys;
  keys.kek = test::test_kek();
  keys.lookup = test::test_kek(7);
  auto v = open_vault(dir, 64ull << 20, keys, 1000, true, state_owner{"site", "gw", false});
  append_request batch{"lock-1", {}, false};
  for (int i = 1; i <= events; ++i) {
    protocol::journal_record r;
    r.lock = "lock-1";
    r.seq = static_cast<std::uint64_t>(i);
    r.ts = 1000 + i;
    r.type = "door_open";
    r.door = "front";
    r.received_at = 2000 + i;
    batch.records.push_back(r);
  }
  v->events->append(std::span<const append_request>{&batch, 1});
}

std::vector<char> read_all(const std::filesystem::path& p) {
  std::ifstream in{p, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

void write_all(const std::filesystem::path& p, const std::vector<char>& bytes) {
  std::ofstream out{p, std::ios::binary | std::ios::trunc};
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Adds a table holding one record whose value (`size` bytes) lies on
/// overflow pages of its own, behind the key `key`.
void add_big_record(const std::filesystem::path& dir, const std::string& key, std::size_t size) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == MDB_SUCCESS);
  mdb_env_set_maxdbs(env, 64);
  mdb_env_set_mapsize(env, 64ull << 20);
  REQUIRE(mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0600) == MDB_SUCCESS);
  MDB_txn* t = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &t) == MDB_SUCCESS);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(t, "big", MDB_CREATE, &dbi) == MDB_SUCCESS);
  std::string value(size, 'v');
  std::string key_copy = key;
  MDB_val k{key_copy.size(), key_copy.data()}, v{value.size(), value.data()};
  REQUIRE(mdb_put(t, dbi, &k, &v, 0) == MDB_SUCCESS);
  REQUIRE(mdb_txn_commit(t) == MDB_SUCCESS);
  mdb_env_close(env);
}

} // namespace

TEST_SUITE("store") {

TEST_CASE("state_check: a sound file passes the meta check and the walk") {
  temp_dir dir;
  make_state(dir.path, 200);
  CHECK_FALSE(check_meta_pages(dir.path).has_value());
  CHECK_FALSE(walk_in_child(dir.path, std::chrono::seconds{30}).has_value());
  CHECK_NOTHROW(preflight_state(dir.path, false));
}

TEST_CASE("state_check: damaged meta pages and short files are named, never mapped") {
  temp_dir dir;
  make_state(dir.path, 200);
  auto data = dir.path / "data.mdb";
  auto good = read_all(data);
  REQUIRE(good.size() > 3 * 4096);

  SUBCASE("cut short") {
    write_all(data, {good.begin(), good.begin() + static_cast<long>(good.size() / 2)});
    auto problem = check_meta_pages(dir.path);
    REQUIRE(problem);
    CHECK(problem->find("cut short") != std::string::npos);
    CHECK_THROWS_AS(preflight_state(dir.path, false), store_error);
  }
  SUBCASE("shorter than a page") {
    write_all(data, {good.begin(), good.begin() + 100});
    REQUIRE(check_meta_pages(dir.path));
  }
  SUBCASE("first meta page overwritten") {
    auto bad = good;
    for (std::size_t i = 0; i < 4096; ++i)
      bad[i] = static_cast<char>(i * 31 + 7);
    write_all(data, bad);
    auto problem = check_meta_pages(dir.path);
    REQUIRE(problem);
    CHECK(problem->find("meta page") != std::string::npos);
  }
  SUBCASE("both meta pages overwritten") {
    auto bad = good;
    for (std::size_t i = 0; i < 8192; ++i)
      bad[i] = static_cast<char>(0xAB);
    write_all(data, bad);
    auto problem = check_meta_pages(dir.path);
    REQUIRE(problem);
    CHECK(problem->find("neither") != std::string::npos);
  }
  SUBCASE("a root page pointer out of the file") {
    auto bad = good;
    // The main database's root in both meta pages (page header 16, meta offset 112 + 40).
    for (std::size_t page : {0u, 4096u})
      for (std::size_t i = 0; i < 8; ++i)
        bad[page + 16 + 112 + i] = static_cast<char>(0x7f);
    write_all(data, bad);
    auto problem = check_meta_pages(dir.path);
    REQUIRE(problem);
    CHECK(problem->find("root page") != std::string::npos);
  }
  SUBCASE("data pages overwritten: the walk in a child says so, this process lives") {
    auto bad = good;
    for (std::size_t i = 2 * 4096; i < bad.size(); ++i)
      bad[i] = static_cast<char>((i * 131) ^ 0x5a);
    write_all(data, bad);
    CHECK_FALSE(check_meta_pages(dir.path).has_value());
    auto problem = walk_in_child(dir.path, std::chrono::seconds{30});
    REQUIRE(problem);
    CHECK_THROWS_AS(preflight_state(dir.path, false), store_error);
  }
}

TEST_CASE("state_check: a record whose size runs past the end of the file is found by the walk") {
  // The walk reads one byte per page outside the page the cursor is on: a
  // value on overflow pages whose size was overwritten must still fault in
  // the child, not later in the daemon.
  temp_dir dir;
  make_state(dir.path, 20);
  const std::string key = "size-probe-key-0123456789";
  add_big_record(dir.path, key, 10000);
  REQUIRE_FALSE(walk_in_child(dir.path, std::chrono::seconds{30}).has_value());
  auto data = dir.path / "data.mdb";
  auto bytes = read_all(data);
  auto at = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  REQUIRE(at != bytes.end());
  // The leaf node's header, before its key: data size (low 16 bits, high
  // 16 bits), flags, key size. 0x7fff0000 bytes is far beyond the file.
  auto node = static_cast<std::size_t>(at - bytes.begin()) - 8;
  bytes[node] = 0;
  bytes[node + 1] = 0;
  bytes[node + 2] = static_cast<char>(0xff);
  bytes[node + 3] = static_cast<char>(0x7f);
  write_all(data, bytes);
  CHECK_FALSE(check_meta_pages(dir.path).has_value());
  auto problem = walk_in_child(dir.path, std::chrono::seconds{30});
  REQUIRE(problem);
  MESSAGE("walk: " << *problem);
  CHECK_THROWS_AS(preflight_state(dir.path, false), store_error);
}

TEST_CASE("state_check: a recorded state whose data file is gone is refused unless started empty") {
  temp_dir dir;
  make_state(dir.path, 5);
  auto id = read_identity_file(dir.path);
  REQUIRE(id);
  CHECK(id->site == "site");
  CHECK(id->gateway == "gw");
  std::filesystem::remove(dir.path / "data.mdb");
  try {
    preflight_state(dir.path, false);
    FAIL("a missing data file was accepted");
  } catch (const store_error& e) {
    CHECK(e.why() == store_error::kind::damaged);
    CHECK(std::string{e.what()}.find("--start-empty") != std::string::npos);
  }
  CHECK_NOTHROW(preflight_state(dir.path, true));
}

TEST_CASE("state_check: another gateway's state is foreign") {
  temp_dir dir;
  make_state(dir.path, 1);
  vault_keys keys;
  keys.kek = test::test_kek();
  keys.lookup = test::test_kek(7);
  try {
    open_vault(dir.path, 64ull << 20, keys, 1000, true, state_owner{"site", "gw-9", false});
    FAIL("another gateway's state was accepted");
  } catch (const store_error& e) {
    CHECK(e.why() == store_error::kind::foreign);
    CHECK(std::string{e.what()}.find("belongs to gateway site/gw") != std::string::npos);
  }
}

TEST_CASE("state_check: identity text round-trips and refuses what it did not write") {
  state_identity id{"site-1", "gw-1", std::string(32, 'a'), 1234};
  auto back = state_identity::from_text(id.to_text());
  REQUIRE(back);
  CHECK(*back == id);
  CHECK_FALSE(state_identity::from_text(""));
  CHECK_FALSE(state_identity::from_text("lockbridge-state 2\nsite a\n"));
  CHECK_FALSE(state_identity::from_text("lockbridge-state 1\nsite a\ngateway b\nstate_id short\n"));
  CHECK_FALSE(state_identity::from_text("lockbridge-state 1\nsite a\ngateway b\nstate_id "
                                        + std::string(32, 'c') + "\ncreated_at x\n"));
}

TEST_CASE("state_check: salvage copies a sound state whole and recounts the journal") {
  temp_dir from, to;
  make_state(from.path, 300);
  std::filesystem::remove_all(to.path);
  auto report = salvage_raw(from.path, to.path);
  for (const auto& t : report.lost)
    CHECK_MESSAGE(t.records == 0, t.table);
  {
    auto env = std::make_shared<environment>(to.path, 64ull << 20, false);
    recount_journal(*env);
  }
  vault_keys keys;
  keys.kek = test::test_kek();
  keys.lookup = test::test_kek(7);
  auto v = open_vault(to.path, 64ull << 20, keys, 1000, false);
  CHECK(v->events->figures().depth == 300);
  auto values = check_values(*v->env, *v->keys);
  for (const auto& t : values)
    CHECK_MESSAGE(t.unreadable == 0, t.table);
  CHECK_THROWS_AS(salvage_raw(from.path, to.path), store_error); // never over a state
}

} // TEST_SUITE
