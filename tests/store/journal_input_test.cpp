// What a lock said, made fit for the journal on the transport's thread:
// every credential identifier replaced by its pseudonym, arrival stamped.

#include "store/journal_input.hpp"

#include <doctest/doctest.h>

#include "store/epochs.hpp"
#include "tests/store/helpers.hpp"

using namespace lockbridge;
using namespace lockbridge::store;
using test::ring;
using test::temp_dir;

namespace {

struct names_fixture {
  temp_dir dir;
  std::shared_ptr<environment> env = std::make_shared<environment>(dir.path, 64ull << 20);
  std::shared_ptr<epoch_store> epochs = std::make_shared<epoch_store>(env, ring(env), 1000);
  key256 lookup_key = [] {
    key256 k;
    k.fill(9);
    return k;
  }();
  pseudonym_source names{epochs, lookup_key};
};

} // namespace

TEST_CASE("journal input: a lock's batch leaves with pseudonyms, never a raw identifier") {
  names_fixture f;
  protocol::event_batch batch;
  batch.events.push_back({7, 1000, "access_granted", "front", std::string{"04A1B2C3D4"}, "pin"});
  batch.events.push_back({8, 1001, "door_open", "front", std::nullopt, std::nullopt});
  auto req = journal_batch("lock-a", batch, f.names, 123456);
  CHECK(req.lock_id == "lock-a");
  CHECK_FALSE(req.assign_seq);
  REQUIRE(req.records.size() == 2);
  CHECK(req.records[0].lock == "lock-a");
  CHECK(req.records[0].seq == 7);
  CHECK(req.records[0].ts == 1000);
  CHECK(req.records[0].type == "access_granted");
  CHECK(req.records[0].door == "front");
  REQUIRE(req.records[0].cred);
  CHECK(*req.records[0].cred == f.names("04A1B2C3D4"));
  CHECK(req.records[0].cred->find("04A1B2C3D4") == std::string::npos);
  CHECK(req.records[0].detail == std::optional<std::string>{"pin"});
  CHECK(req.records[0].received_at == 123456);
  CHECK_FALSE(req.records[1].cred);
  CHECK(req.records[1].received_at == 123456);
}

TEST_CASE("journal input: an access decision is the gateway's own event, numbered by the journal") {
  names_fixture f;
  protocol::access_request request{"04A1B2C3D4", "back", 2000};
  protocol::access_decision denied{false, protocol::access_reason::revoked, std::nullopt};
  auto req = journal_decision("lock-a", request, denied, 3000, f.names);
  CHECK(req.lock_id == "lock-a.access");
  CHECK(req.assign_seq);
  REQUIRE(req.records.size() == 1);
  const auto& r = req.records[0];
  CHECK(r.lock == "lock-a.access");
  CHECK(r.type == "access_denied");
  CHECK(r.door == "back");
  CHECK(r.ts == 2000);
  CHECK(r.received_at == 3000);
  CHECK(r.detail == std::optional<std::string>{"revoked"});
  REQUIRE(r.cred);
  CHECK(*r.cred == f.names("04A1B2C3D4"));
  protocol::access_decision allowed{true, protocol::access_reason::allowed, 9000};
  CHECK(journal_decision("lock-a", request, allowed, 3000, f.names).records[0].type
        == "access_granted");
}
