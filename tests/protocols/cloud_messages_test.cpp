#include "protocols/cloud_messages.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace lockbridge::protocol;

TEST_SUITE("protocols") {

TEST_CASE("cloud_messages: topics follow lockbridge/v1/{site}/{gateway}") {
  topics t{"site-1", "gw-1"};
  CHECK(t.events() == "lockbridge/v1/site-1/gw-1/events");
  CHECK(t.status() == "lockbridge/v1/site-1/gw-1/status");
  CHECK(t.lock_state("lock-7") == "lockbridge/v1/site-1/gw-1/locks/lock-7/state");
  CHECK(t.command("lock") == "lockbridge/v1/site-1/gw-1/cmd/lock");
}

TEST_CASE("cloud_messages: ids refuse topic wildcards and separators") {
  CHECK(is_valid_id("lock-01_a"));
  CHECK_FALSE(is_valid_id(""));
  CHECK_FALSE(is_valid_id("a/b"));
  CHECK_FALSE(is_valid_id("a+"));
  CHECK_FALSE(is_valid_id("#"));
  CHECK_FALSE(is_valid_id(std::string(65, 'a')));
}

TEST_CASE("cloud_messages: journal record round-trips and damage is detected") {
  journal_record r{"lock-1", 9, 1700000000000, "access_granted", "front", "p1.1.abc",
                   std::nullopt, 1700000000123};
  auto bytes = encode_record(r);
  auto back = decode_record(bytes);
  REQUIRE(back.ok());
  CHECK(*back == r);
  bytes.resize(bytes.size() / 2);
  CHECK_FALSE(decode_record(bytes).ok());
  auto wrong = nlohmann::json::to_cbor(nlohmann::json{{"l", 5}});
  CHECK_FALSE(decode_record(wrong).ok());
}

TEST_CASE("cloud_messages: events payload carries schema and stable event ids") {
  std::vector<journal_record> rs{
    {"lock-1", 1, 10, "door_open", "d1", std::nullopt, std::nullopt, 11},
    {"lock-2", 4, 12, "access_denied", "d2", "p1.1.x", "bad pin", 13}};
  auto doc = nlohmann::json::parse(encode_events("s", "g", rs));
  CHECK(doc["schema"] == "lockbridge/events/1");
  REQUIRE(doc["events"].size() == 2);
  CHECK(doc["events"][0]["event_id"] == "g/lock-1/1");
  CHECK(doc["events"][1]["event_id"] == "g/lock-2/4");
  CHECK(doc["events"][1]["cred"] == "p1.1.x");
  CHECK_FALSE(doc["events"][0].contains("cred"));
}

}
