#include "protocols/lock_messages.hpp"

#include <algorithm>
#include <random>

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
  // {"events": [[[[...1]]]]}: 2000 levels where an event map belongs.
  std::vector<std::uint8_t> deep{0xa1, 0x66, 'e', 'v', 'e', 'n', 't', 's', 0x81};
  deep.insert(deep.end(), 2000, 0x81);
  deep.push_back(0x01);
  auto with_trailing = valid;
  with_trailing.push_back(0x00);
  // {"events": [_ event ]} (indefinite-length array) with one event too many.
  std::vector<std::uint8_t> indefinite_big{0xa1, 0x66, 'e', 'v', 'e', 'n', 't', 's', 0x9f};
  for (int i = 1; i <= 65; ++i) {
    auto e = cbor(event(i));
    indefinite_big.insert(indefinite_big.end(), e.begin(), e.end());
  }
  indefinite_big.push_back(0xff);
  // An event map that names seq twice: a1 "events" 81 a5 seq 1 seq 2 ts .. type .. door ..
  auto twice = cbor(json{{"events", {event(1)}}});
  twice[9] = 0xa5; // the event map now has five entries ...
  auto extra = cbor(json{{"seq", 2}});
  twice.insert(twice.begin() + 10, extra.begin() + 1, extra.end()); // ... the first "seq": 2
  auto bad_utf8 = cbor(json{{"events", {event(1)}}});
  {
    auto d = event(1);
    d["detail"] = "ok";
    bad_utf8 = cbor(json{{"events", {d}}});
    auto pos = std::search(bad_utf8.begin(), bad_utf8.end(), std::begin("ok"), std::end("ok") - 1);
    *pos = 0xc3; // a lead byte followed by 'k': not UTF-8
  }
  auto tagged_ts = cbor(json{{"events", {event(1)}}});
  {
    const std::uint8_t key[] = {0x62, 't', 's'}; // the text string "ts"
    auto pos = std::search(tagged_ts.begin(), tagged_ts.end(), std::begin(key), std::end(key));
    tagged_ts.insert(pos + 3, 0xc1); // tag 1 (epoch time) before the value
  }
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
    {"nested too deep", deep, "events[0]", "expected a map, got array"},
    {"trailing bytes", with_trailing, "", "unexpected bytes after the CBOR map"},
    {"indefinite too many", indefinite_big, "events", "exceeds the limit of 64"},
    {"field twice", twice, "events[0].seq", "appears twice"},
    {"detail not UTF-8", bad_utf8, "events[0].detail", "UTF-8"},
    {"tagged ts", tagged_ts, "events[0].ts", "got tagged item"},
    {"map key not text", std::vector<std::uint8_t>{0xa1, 0x01, 0x02}, "", "keys must be text"},
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
    std::string what = r.what;
    CAPTURE(what);
    auto out = decode_event_batch(r.bytes);
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().field == r.field);
    CHECK(out.error().message.find(r.message_part) != std::string::npos);
  }
}

TEST_CASE("lock_messages: mutated batches never yield an event that breaks the rules") {
  // A fixed seed keeps this repeatable; under the asan preset it also checks
  // that no mutation makes the decoder read out of bounds.
  event_batch in;
  in.events.push_back({1, 1700000000000, "access_granted", "front", "04A1B2C3", "x"});
  in.events.push_back({2, 1700000000500, "door_open", "front", std::nullopt, std::nullopt});
  in.events.push_back({9, 1700000000900, "door_close", "back", std::nullopt, "ok"});
  const auto valid = encode_event_batch(in);
  std::mt19937 rng{20261127};
  std::size_t accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    auto bytes = valid;
    auto edits = 1 + rng() % 4;
    for (unsigned e = 0; e < edits; ++e) {
      auto pos = rng() % bytes.size();
      switch (rng() % 4) {
      case 0: bytes[pos] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
      case 1: bytes[pos] = static_cast<std::uint8_t>(rng()); break;
      case 2: bytes.resize(pos + 1); break;
      default: bytes.insert(bytes.begin() + static_cast<long>(pos), static_cast<std::uint8_t>(rng()));
      }
    }
    auto out = decode_event_batch(bytes);
    if (!out.ok()) {
      CHECK_FALSE(out.error().message.empty());
      continue;
    }
    ++accepted;
    REQUIRE_FALSE(out->events.empty());
    REQUIRE(out->events.size() <= lock_limits::max_events_per_batch);
    for (std::size_t i = 0; i < out->events.size(); ++i) {
      const auto& ev = out->events[i];
      CHECK(ev.seq >= 1);
      CHECK(ev.ts > 0);
      CHECK((!ev.type.empty() && ev.type.size() <= lock_limits::max_type_length));
      CHECK((!ev.door.empty() && ev.door.size() <= lock_limits::max_door_length));
      if (i > 0)
        CHECK(ev.seq > out->events[i - 1].seq);
    }
  }
  MESSAGE("accepted " << accepted << " of 20000 mutations");
}

TEST_CASE("lock_messages: indefinite-length arrays and maps are accepted") {
  // {_ "events": [_ {seq 1 ...} ] }
  std::vector<std::uint8_t> bytes{0xbf, 0x66, 'e', 'v', 'e', 'n', 't', 's', 0x9f};
  auto e = cbor(event(7));
  bytes.insert(bytes.end(), e.begin(), e.end());
  bytes.push_back(0xff);
  bytes.push_back(0xff);
  auto out = decode_event_batch(bytes);
  REQUIRE(out.ok());
  REQUIRE(out->events.size() == 1);
  CHECK(out->events[0].seq == 7);
  CHECK(out->events[0].door == "front");
}

TEST_CASE("lock_messages: every truncation of a valid batch is refused, never read past") {
  event_batch in;
  in.events.push_back({1, 1700000000000, "access_granted", "front", "04A1B2C3", "x"});
  in.events.push_back({2, 1700000000500, "door_open", "front", std::nullopt, std::nullopt});
  auto bytes = encode_event_batch(in);
  for (std::size_t n = 1; n < bytes.size(); ++n) {
    std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    CAPTURE(n);
    CHECK_FALSE(decode_event_batch(cut).ok());
  }
}

TEST_CASE("lock_messages: our encoding is the one nlohmann's CBOR writer produces") {
  event_batch in;
  in.events.push_back({300, 1700000000000, "access_granted", "front", "04A1B2C3", "x"});
  auto ours = encode_event_batch(in);
  auto theirs = json::from_cbor(ours);
  CHECK(theirs["events"][0]["seq"] == 300);
  CHECK(theirs["events"][0]["ts"] == 1700000000000);
  CHECK(theirs["events"][0]["cred"] == "04A1B2C3");
}

TEST_CASE("lock_messages: ack round-trips and damaged acks are refused") {
  auto out = decode_events_ack(encode_events_ack(42));
  REQUIRE(out.ok());
  CHECK(*out == 42);
  CHECK_FALSE(decode_events_ack(cbor(json{{"acked_seq", "x"}})).ok());
  CHECK_FALSE(decode_events_ack(std::vector<std::uint8_t>{0xa1}).ok());
}

}
