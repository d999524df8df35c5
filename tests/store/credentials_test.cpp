#include "store/credentials.hpp"

#include "tests/store/helpers.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <doctest/doctest.h>

using namespace lockbridge;
using store::credential_store;

namespace {

using test::temp_dir;

store::key256 lookup() {
  store::key256 key{};
  key.fill(7);
  return key;
}

protocol::credential cred(const std::string& subject, std::uint64_t version) {
  protocol::credential c;
  c.subject = subject;
  c.doors = {"front"};
  c.version = version;
  return c;
}

protocol::credential_update update(const std::string& raw, const std::string& subject,
                                   std::uint64_t version) {
  return {raw, cred(subject, version)};
}

} // namespace

TEST_SUITE("store") {

TEST_CASE("credentials: a snapshot replaces the set; lookups use the keyed HMAC") {
  temp_dir dir;
  auto env = std::make_shared<store::environment>(dir.path, 64ull << 20);
  credential_store s{env, test::ring(env), lookup()};
  std::vector<std::pair<credential_store::lookup_key, protocol::credential>> entries;
  for (int i = 0; i < 1000; ++i)
    entries.emplace_back(s.key_of("CARD-" + std::to_string(i)), cred("sub-" + std::to_string(i % 10), 5));
  s.replace_all(entries, 5, 1000);
  auto f = s.figures();
  CHECK(f.count == 1000);
  CHECK(f.version == 5);
  CHECK(f.synced_at == 1000);
  auto hit = s.find(s.key_of("CARD-42"));
  REQUIRE(hit.credential.has_value());
  CHECK(hit.credential->subject == "sub-2");
  CHECK_FALSE(s.find(s.key_of("CARD-1000")).credential.has_value());

  // A second snapshot replaces everything: nothing of the first survives.
  s.replace_all({{s.key_of("OTHER"), cred("sub-x", 6)}}, 6, 2000);
  CHECK(s.figures().count == 1);
  CHECK_FALSE(s.find(s.key_of("CARD-42")).credential.has_value());
  CHECK(s.find(s.key_of("OTHER")).credential.has_value());

  // The same credential twice is refused and changes nothing.
  CHECK_THROWS_AS(s.replace_all({{s.key_of("A"), cred("s", 7)}, {s.key_of("A"), cred("s", 7)}}, 7, 3000),
                  store::store_error);
  CHECK(s.figures().version == 6);
}

TEST_CASE("credentials: deltas apply revocations, deletions and upserts against their base") {
  temp_dir dir;
  auto env = std::make_shared<store::environment>(dir.path, 64ull << 20);
  credential_store s{env, test::ring(env), lookup()};
  s.replace_all({{s.key_of("A"), cred("s1", 1)}, {s.key_of("B"), cred("s2", 1)}}, 1, 10);

  protocol::credential_delta gap;
  gap.base_version = 3;
  gap.version = 4;
  gap.upsert.push_back(update("C", "s3", 4));
  CHECK_FALSE(s.apply(gap, 20).has_value());
  CHECK(s.figures().version == 1);
  CHECK_FALSE(s.find(s.key_of("C")).credential.has_value());

  protocol::credential_delta d;
  d.base_version = 1;
  d.version = 2;
  d.revoke = {"A", "nope"};
  d.remove = {"B"};
  d.upsert.push_back(update("C", "s3", 2));
  auto counts = s.apply(d, 30);
  REQUIRE(counts.has_value());
  CHECK(counts->revoked == 1);
  CHECK(counts->deleted == 1);
  CHECK(counts->upserted == 1);
  CHECK(counts->not_found == 1);
  auto a = s.find(s.key_of("A"));
  REQUIRE(a.credential.has_value());
  CHECK(a.credential->revoked);
  CHECK(a.credential->version == 2);
  CHECK_FALSE(s.find(s.key_of("B")).credential.has_value());
  CHECK(s.figures().count == 2);
  CHECK(s.figures().version == 2);
  CHECK(s.figures().synced_at == 30);

  protocol::credential_delta confirm;
  confirm.base_version = 2;
  confirm.version = 2;
  REQUIRE(s.apply(confirm, 40).has_value());
  CHECK(s.figures().synced_at == 40);
}

TEST_CASE("credentials: the file never holds the raw identifier") {
  temp_dir dir;
  {
    auto env = std::make_shared<store::environment>(dir.path, 64ull << 20);
    credential_store s{env, test::ring(env), lookup()};
    s.replace_all({{s.key_of("04A1B2C3D4E5F6"), cred("sub-1", 1)}}, 1, 10);
    protocol::credential_delta d;
    d.base_version = 1;
    d.version = 2;
    d.upsert.push_back(update("9988776655", "sub-2", 2));
    REQUIRE(s.apply(d, 20).has_value());
  }
  std::ifstream in{dir.path / "data.mdb", std::ios::binary};
  std::string bytes{std::istreambuf_iterator<char>{in}, {}};
  CHECK(bytes.find("credentials") != std::string::npos); // the scan does read the file
  CHECK(bytes.find("sub-1") == std::string::npos); // subjects: sealed values, HMAC'd index
  CHECK(bytes.find("sub-2") == std::string::npos);
  CHECK(bytes.find("04A1B2C3D4E5F6") == std::string::npos);
  CHECK(bytes.find("9988776655") == std::string::npos);
}

TEST_CASE("credentials: the time high-water mark only rises") {
  temp_dir dir;
  auto env = std::make_shared<store::environment>(dir.path, 64ull << 20);
  credential_store s{env, test::ring(env), lookup()};
  s.save_time_high_water(5000);
  s.save_time_high_water(4000);
  CHECK(s.figures().time_high_water == 5000);
}

}
