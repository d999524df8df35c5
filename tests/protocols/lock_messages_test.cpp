#include "protocols/lock_messages.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace lockbridge::protocol;
using nlohmann::json;

namespace {

std::vector<std::uint8_t> cbor(const json& j) {
  return json::to_cbor(j);
}

json event(std::uint64_t seq) {
  return {{"seq", seq}, {"ts", 1700000000000}, {"type", "access_granted"}, {"door", "front"}};
}

} // namespace

TEST_SUITE("protocols") {

TEST_CASE("lock_messages: a valid batch round-trips") {
  event_batch in;
  in.events.push_back({1, 1700000000000, "access_granted", "front", "04A1B2C3", std::nullopt});
  in.events.push_back({2, 1700000000500, "door_open", "front", std::nullopt, "sensor 2"});
  auto bytes = encode_event_batch(in);
  auto out = decode_event_batch(bytes);
  REQUIRE(out.ok());
  REQUIRE(out->events.size() == 2);
  CHECK(out->events[0].seq == 1);
  CHECK(out->events[0].cred == "04A1B2C3");
  CHECK(out->events[1].detail == "sensor 2");
  CHECK_FALSE(out->events[1].cred.has_value());
}

TEST_CASE("lock_messages: invalid batches are refused naming the field") {
  struct row {
    const char* what;
    std::vector<std::uint8_t> bytes;
    const char* field;
    const char* message_part;
  };
  auto big = json{{"events", json::array()}};
  for (int i = 1; i <= 65; ++i)
    big["events"].push_back(event(i));
  auto valid = cbor(json{{"events", {event(1)}}});
  std::vector<std::uint8_t> truncated(valid.begin(), valid.end() - 3);
  std::vector<std::uint8_t> oversized(20000, 0x60);
  std::vector<std::uint8_t> deep(2000, 0x81);
  deep.push_back(0x01);
  auto no_seq = event(1);
  no_seq.erase("seq");
  auto text_seq = event(1);
  text_seq["seq"] = "1";
  auto neg_seq = event(1);
  neg_seq["seq"] = -4;
  auto zero_seq = event(1);
  zero_seq["seq"] = 0;
  auto float_ts = event(1);
  float_ts["ts"] = 1.5;
  auto long_door = event(1);
  long_door["door"] = std::string(65, 'd');
  auto bad_type = event(1);
  bad_type["type"] = "unlock now";
  auto name_field = event(1);
  name_field["name"] = "Alice";
  auto cred_number = event(1);
  cred_number["cred"] = 1234;
  std::vector<row> rows{
    {"empty", {}, "", "empty payload"},
    {"truncated", truncated, "", "malformed CBOR"},
    {"not a map", cbor(json::array({1, 2})), "", "expected a CBOR map"},
    {"oversized", oversized, "", "exceeds the limit"},
    {"nested too deep", deep, "", "nested deeper"},
    {"no events", cbor(json{{"x", 1}}), "x", "unknown field"},
    {"events missing", cbor(json::object()), "events", "missing"},
    {"events not array", cbor(json{{"events", 3}}), "events", "expected an array"},
    {"empty events", cbor(json{{"events", json::array()}}), "events", "at least one"},
    {"too many events", cbor(big), "events", "exceeds the limit of 64"},
    {"event not map", cbor(json{{"events", {1}}}), "events[0]", "expected a map"},
    {"seq missing", cbor(json{{"events", {no_seq}}}), "events[0].seq", "missing"},
    {"seq text", cbor(json{{"events", {text_seq}}}), "events[0].seq", "unsigned integer"},
    {"seq negative", cbor(json{{"events", {neg_seq}}}), "events[0].seq", "unsigned integer"},
    {"seq zero", cbor(json{{"events", {zero_seq}}}), "events[0].seq", "1 or more"},
    {"ts float", cbor(json{{"events", {float_ts}}}), "events[0].ts", "expected an integer"},
    {"door too long", cbor(json{{"events", {long_door}}}), "events[0].door", "1 to 64"},
    {"type with space", cbor(json{{"events", {bad_type}}}), "events[0].type", "only letters"},
    {"personal field", cbor(json{{"events", {name_field}}}), "events[0].name", "unknown field"},
    {"cred number", cbor(json{{"events", {cred_number}}}), "events[0].cred", "text string"},
    {"seq backwards", cbor(json{{"events", {event(5), event(3)}}}), "events[1].seq",
     "strictly rising"},
    {"seq repeated", cbor(json{{"events", {event(5), event(5)}}}), "events[1].seq",
     "strictly rising"},
  };
  for (const auto& r : rows) {
    CAPTURE(r.what);
    auto out = decode_event_batch(r.bytes);
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().field == r.field);
    CHECK(out.error().message.find(r.message_part) != std::string::npos);
  }
}

TEST_CASE("lock_messages: ack round-trips and damaged acks are refused") {
  auto out = decode_events_ack(encode_events_ack(42));
  REQUIRE(out.ok());
  CHECK(*out == 42);
  CHECK_FALSE(decode_events_ack(cbor(json{{"acked_seq", "x"}})).ok());
  CHECK_FALSE(decode_events_ack(std::vector<std::uint8_t>{0xa1}).ok());
}

}
