#include "store/sealing.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <set>

#include "store/audit.hpp"
#include "store/epochs.hpp"
#include "store/journal.hpp"
#include "store/outbox.hpp"
#include "store/pseudonyms.hpp"
#include "store/quarantine.hpp"
#include "tests/store/helpers.hpp"

using namespace lockbridge;
using namespace lockbridge::store;
using test::ring;
using test::temp_dir;
using test::test_kek;

namespace {

constexpr std::uint64_t map_size = 64ull << 20;

std::vector<std::uint8_t> bytes(std::string_view s) {
  return {s.begin(), s.end()};
}

std::vector<std::uint8_t> from_hex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string{hex.substr(i, 2)}, nullptr, 16)));
  return out;
}

append_request events(const std::string& lock, std::uint64_t from, std::uint64_t to,
                      std::optional<std::string> cred = std::nullopt) {
  append_request req{lock, {}};
  for (auto s = from; s <= to; ++s)
    req.records.push_back(
      protocol::journal_record{lock, s, 1, "access_granted", "d", cred, std::nullopt, 1000});
  return req;
}

/// Overwrites `needle` in the file's bytes (as an attacker with the file would).
bool patch_file(const std::filesystem::path& file, const std::function<bool(std::string&)>& edit) {
  std::string data;
  {
    std::ifstream in{file, std::ios::binary};
    data.assign(std::istreambuf_iterator<char>{in}, {});
  }
  if (!edit(data))
    return false;
  std::ofstream out{file, std::ios::binary | std::ios::trunc};
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  return true;
}

/// Finds the first value sealed under data key 1 (format 0x01, id 00000001)
/// in the raw file and flips one bit of its ciphertext, as an attacker or a
/// failing disk would.
bool flip_first_sealed_value(const std::filesystem::path& file) {
  return patch_file(file, [](std::string& data) {
    const std::string header{"\x01\x00\x00\x00\x01", 5};
    auto at = data.find(header);
    if (at == std::string::npos)
      return false;
    data[at + 20] = static_cast<char>(data[at + 20] ^ 0x01);
    return true;
  });
}

} // namespace

TEST_SUITE("store") {

TEST_CASE("sealing: RFC 5649 key wrap with padding, known answer (section 6)") {
  auto kek = from_hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
  auto key = from_hex("c37b7e6492584340bed12207808941155068f738");
  auto wrapped = wrap_key(kek, key);
  CHECK(wrapped == from_hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"));
  CHECK(unwrap_key(kek, wrapped) == key);
  wrapped[3] ^= 1;
  CHECK_FALSE(unwrap_key(kek, wrapped).has_value());
}

TEST_CASE("sealing: values open only under their table and key, and never after a flipped bit") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  keyring keys{env, test_kek()};
  auto k1 = bytes("key-1");
  auto sealed = keys.seal(table::journal, k1, bytes("hello"));
  CHECK(sealed.size() == 5 + keyring::overhead);
  CHECK(keys.open(table::journal, k1, sealed) == bytes("hello"));
  CHECK_FALSE(keys.open(table::journal, bytes("key-2"), sealed).has_value());
  CHECK_FALSE(keys.open(table::audit, k1, sealed).has_value());
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    auto flipped = sealed;
    flipped[i] ^= 0x10;
    CHECK_FALSE(keys.open(table::journal, k1, flipped).has_value());
  }
  // A fresh nonce each time: the same plaintext never seals the same way.
  CHECK(keys.seal(table::journal, k1, bytes("hello")) != sealed);
}

TEST_CASE("sealing: the wrong key-encryption key is refused; the previous one re-wraps") {
  temp_dir dir;
  std::vector<std::uint8_t> sealed;
  {
    auto env = std::make_shared<environment>(dir.path, map_size);
    keyring keys{env, test_kek(1)};
    sealed = keys.seal(table::credentials, bytes("k"), bytes("secret"));
  }
  {
    auto env = std::make_shared<environment>(dir.path, map_size);
    CHECK_THROWS_WITH_AS(keyring(env, test_kek(2)),
                         doctest::Contains("previous_key_encryption_key_file"), store_error);
    // Offline rotation: new key in force, the old one given once.
    keyring keys{env, test_kek(2), test_kek(1)};
    CHECK(keys.open(table::credentials, bytes("k"), sealed) == bytes("secret"));
  }
  auto env = std::make_shared<environment>(dir.path, map_size);
  keyring keys{env, test_kek(2)}; // the old key is no longer needed
  CHECK(keys.open(table::credentials, bytes("k"), sealed) == bytes("secret"));
  keys.rewrap(test_kek(3));
  CHECK(keys.is_kek(test_kek(3)));
  CHECK_THROWS_AS(keyring(env, test_kek(2)), store_error);
  keyring again{env, test_kek(3)};
  CHECK(again.open(table::credentials, bytes("k"), sealed) == bytes("secret"));
}

TEST_CASE("sealing: a data-key rotation keeps old values readable until retired") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  auto keys = ring(env);
  journal j{env, keys, {}};
  std::vector<append_request> reqs{events("a", 1, 50)};
  j.append(reqs);
  auto old_id = keys->current();
  auto new_id = keys->rotate();
  CHECK(new_id == old_id + 1);
  std::vector<append_request> more{events("a", 51, 60)};
  j.append(more);
  CHECK(j.read(0, 1000).size() == 60);
  // Re-seal in small steps, then the old key can go.
  std::uint64_t from = 0;
  int steps = 0;
  do {
    from = j.reseal(from, 7);
    ++steps;
  } while (from != 0 && steps < 100);
  CHECK(steps > 5);
  keys->retire(old_id);
  CHECK(keys->ids() == std::vector<std::uint32_t>{new_id});
  std::vector<std::uint64_t> damaged;
  CHECK(j.read(0, 1000, &damaged).size() == 60);
  CHECK(damaged.empty());
}

TEST_CASE("sealing: a flipped bit in the file is quarantined, never used") {
  temp_dir dir;
  {
    auto env = std::make_shared<environment>(dir.path, map_size);
    journal j{env, ring(env), {}};
    std::vector<append_request> reqs{events("a", 1, 3)};
    j.append(reqs);
  }
  bool patched = flip_first_sealed_value(dir.path / "data.mdb");
  REQUIRE(patched);
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  std::vector<std::uint64_t> damaged;
  auto entries = j.read(0, 100, &damaged);
  REQUIRE(damaged.size() == 1);
  CHECK(entries.size() == 2);
  CHECK(j.quarantine(damaged) == 1);
  CHECK(j.figures().depth == 2);
  CHECK(quarantine_stats(*env).count == 1);
  damaged.clear();
  CHECK(j.read(0, 100, &damaged).size() == 2);
  CHECK(damaged.empty());
  CHECK(purge_quarantine_before(*env, protocol::journal_record{}.received_at) == 0);
  CHECK(purge_quarantine_before(*env, std::numeric_limits<std::int64_t>::max()) == 1);
}

TEST_CASE("sealing: an outbox entry with a flipped bit is quarantined, the others still go out") {
  temp_dir dir;
  std::uint64_t first = 0;
  {
    auto env = std::make_shared<environment>(dir.path, map_size);
    outbox box{env, ring(env)};
    first = box.append(R"({"id":"r1"})");
    box.append(R"({"id":"r2"})");
    box.append(R"({"id":"r3"})");
  }
  bool patched = flip_first_sealed_value(dir.path / "data.mdb");
  REQUIRE(patched);
  auto env = std::make_shared<environment>(dir.path, map_size);
  outbox box{env, ring(env)};
  std::vector<std::uint64_t> damaged;
  auto entries = box.read(0, 10, &damaged);
  REQUIRE(damaged.size() == 1);
  CHECK(entries.size() == 2);
  CHECK(damaged[0] >= first);
  CHECK(box.quarantine(damaged) == 1);
  CHECK(box.quarantine(damaged) == 0); // already moved
  CHECK(box.size() == 2);
  CHECK(quarantine_stats(*env).count == 1);
  damaged.clear();
  CHECK(box.read(0, 10, &damaged).size() == 2);
  CHECK(damaged.empty());
  // An entry that opens is never quarantined, whatever the caller says.
  std::vector<std::uint64_t> healthy{entries[0].number};
  CHECK(box.quarantine(healthy) == 0);
  CHECK(box.size() == 2);
}

TEST_CASE("erasure: matching journal entries go, the others stay") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  journal j{env, ring(env), {}};
  std::vector<append_request> reqs{events("a", 1, 5, "p1.1.x"), events("b", 1, 5, "p1.1.y"),
                                   events("c", 1, 2)};
  j.append(reqs);
  CHECK(j.erase_matching([](const protocol::journal_record& r) { return r.cred == "p1.1.x"; })
        == 5);
  auto left = j.read(0, 100);
  CHECK(left.size() == 7);
  for (const auto& e : left)
    CHECK(e.record.cred != std::optional<std::string>{"p1.1.x"});
  CHECK(j.figures().depth == 7);
}

TEST_CASE("epochs: rotation changes pseudonyms, destruction forgets the old key for good") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  auto keys = ring(env);
  auto epochs = std::make_shared<epoch_store>(env, keys, 1000);
  key256 lookup_key;
  lookup_key.fill(9);
  pseudonym_source pseudonyms{epochs, lookup_key};
  auto first = pseudonyms("04A1B2C3D4");
  CHECK(first == pseudonyms("04A1B2C3D4"));
  CHECK(first.starts_with("p1.1."));
  epochs->rotate(5000);
  pseudonyms.refresh();
  auto second = pseudonyms("04A1B2C3D4");
  CHECK(second.starts_with("p1.2."));
  CHECK(second != first);
  protocol::keyed_hmac lookup{lookup_key, "lockbridge/credential-lookup/v1"};
  auto all = pseudonyms.all_of(lookup("04A1B2C3D4"));
  CHECK(std::set<std::string>(all.begin(), all.end()) == std::set<std::string>{first, second});
  // Epoch 1 ended at 5000: a cutoff at or before that keeps it.
  CHECK(epochs->destroy_ended_before(5000).empty());
  CHECK(epochs->destroy_ended_before(5001) == std::vector<std::uint32_t>{1});
  pseudonyms.refresh();
  CHECK(pseudonyms.all_of(lookup("04A1B2C3D4")) == std::vector<std::string>{second});
  // Reopened: epoch 1 is gone from the database, epoch numbers never repeat.
  epoch_store reopened{env, keys, 9000};
  CHECK(reopened.all().size() == 1);
  CHECK(reopened.current().epoch == 2);
  CHECK(reopened.rotate(10000).epoch == 3);
}

TEST_CASE("audit: the hash chain verifies, survives delivery, and shows tampering") {
  temp_dir dir;
  auto env = std::make_shared<environment>(dir.path, map_size);
  auto keys = ring(env);
  audit_log log{env, keys};
  for (int i = 0; i < 10; ++i)
    CHECK(log.append(1000 + i, "config_reloaded", {{"locks", i}}) == static_cast<unsigned>(i + 1));
  auto v = log.verify();
  CHECK(v.ok);
  CHECK(v.records == 10);
  auto records = log.read(0, 100);
  REQUIRE(records.size() == 10);
  // Each record names the previous record's hash.
  for (std::size_t i = 1; i < records.size(); ++i)
    CHECK(nlohmann::json::parse(records[i].json)["prev"] == records[i - 1].hash);
  CHECK(records[3].hash == sha256_hex(records[3].json));
  log.remove_upto(4); // delivered
  v = log.verify();
  CHECK(v.ok);
  CHECK(v.first_seq == 5);
  CHECK(v.records == 6);
  CHECK(log.purge_before(1007) == 3); // records 5, 6 and 7 (at 1004 to 1006)
  CHECK(log.verify().ok);
  auto later = log.read(0, 100);
  REQUIRE(later.size() == 3);
  CHECK(log.figures().count == later.size());
  CHECK(log.figures().next_seq == 11);
}

TEST_CASE("audit: a record swapped under another key is found by verify") {
  temp_dir dir;
  {
    auto env = std::make_shared<environment>(dir.path, map_size);
    audit_log log{env, ring(env)};
    for (int i = 0; i < 3; ++i)
      log.append(1000 + i, "x", {{"i", i}});
  }
  // Flip a bit in the middle record's sealed value.
  bool patched = patch_file(dir.path / "data.mdb", [](std::string& data) {
    const std::string header{"\x01\x00\x00\x00\x01", 5};
    std::size_t at = 0;
    std::vector<std::size_t> found;
    while ((at = data.find(header, at)) != std::string::npos)
      found.push_back(at++);
    if (found.size() < 2)
      return false;
    data[found[1] + 30] = static_cast<char>(data[found[1] + 30] ^ 0x04);
    return true;
  });
  REQUIRE(patched);
  auto env = std::make_shared<environment>(dir.path, map_size);
  audit_log log{env, ring(env)};
  auto v = log.verify();
  CHECK_FALSE(v.ok);
  CHECK(v.broken_at >= 1);
  CHECK(v.reason.find("does not open") != std::string::npos);
}

}
