#include "protocols/cloud_messages.hpp"
#include "protocols/log_fields.hpp"

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

TEST_CASE("cloud_messages: journal records keep the bytes of schema version 1") {
  journal_record r{"lock-1", 300, 1700000000000, "access_granted", "front", "p1.1.abc",
                   "note", -5};
  nlohmann::json doc = {{"l", r.lock}, {"s", r.seq}, {"t", r.ts}, {"y", r.type},
                        {"d", r.door}, {"r", r.received_at}, {"c", *r.cred}, {"x", *r.detail}};
  CHECK(encode_record(r) == nlohmann::json::to_cbor(doc));
  auto back = decode_record(nlohmann::json::to_cbor(doc));
  REQUIRE(back.ok());
  CHECK(*back == r);
}

TEST_CASE("cloud_messages: damaged journal records are refused, never read past") {
  journal_record r{"lock-1", 9, 1700000000000, "access_granted", "front", "p1.1.abc",
                   "x", 1700000000123};
  auto bytes = encode_record(r);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    CAPTURE(n);
    CHECK_FALSE(decode_record(cut).ok());
  }
  auto twice = nlohmann::json::to_cbor(nlohmann::json{{"l", "a"}, {"s", 1}});
  twice[0] = 0xa3; // claims a third entry: "l" again
  twice.insert(twice.end(), {0x61, 'l', 0x61, 'b'});
  CHECK_FALSE(decode_record(twice).ok());
}

TEST_CASE("cloud_messages: events JSON escapes what it must and stays valid") {
  std::string nasty = "quote\" back\\slash\nnew\x01ctl \xc3\xa9t\xc3\xa9 \xff end";
  std::vector<journal_record> rs{
    {"lock-1", 1, 10, "door_open", "d1", std::nullopt, nasty, 11}};
  auto text = encode_events("s", "g", rs);
  auto doc = nlohmann::json::parse(text); // throws if not valid JSON (or not UTF-8)
  CHECK(doc["events"][0]["detail"]
        == "quote\" back\\slash\nnew\x01ctl \xc3\xa9t\xc3\xa9 \xef\xbf\xbd end");
  CHECK(doc["events"][0]["seq"] == 1);
  CHECK(doc["events"][0]["received_at"] == 11);
  CHECK(doc["site"] == "s");
  CHECK(doc["gateway"] == "g");
}

TEST_CASE("log_fields: a value echoed in a log line cannot start a line or move the terminal") {
  CHECK(printable_text("plain text, UTF-8: é") == "plain text, UTF-8: é");
  CHECK(printable_text("a\nlockbridge: ready") == "a\\x0alockbridge: ready");
  CHECK(printable_text(std::string_view{"\r\x1b[2J\x7f\0z", 8}) == "\\x0d\\x1b[2J\\x7f\\x00z");
  // Escaping twice changes nothing more (values already escaped stay as they are).
  CHECK(printable_text(printable_text("x\ny")) == printable_text("x\ny"));
}

TEST_CASE("log_fields: component and lock id are taken from the line") {
  auto f = fields_of("coap: lock lock-07 sent a bad event batch: events[0].seq: missing");
  CHECK(f.component == "coap");
  CHECK(f.lock == "lock-07");
  auto g = fields_of("uplink: connected to ssl://127.0.0.1:8883 over mutual TLS");
  CHECK(g.component == "uplink");
  CHECK(g.lock.empty());
  CHECK(fields_of("journal: unlock the door").lock.empty());
  auto b = fields_of("ble: lock ble-3: a replayed BLE access message (counter 4, last 5)");
  CHECK(b.component == "ble");
  CHECK(b.lock == "ble-3");
  CHECK(fields_of("Something: odd").component.empty());
  CHECK(fields_of("reload: 3 locks now; added: lock-04").lock.empty());
}

}
