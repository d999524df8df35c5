// Regressions from fuzzing: each input once crashed, threw or invoked
// undefined behaviour in a decoder; each must now give a clean error.
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "protocols/cbor.hpp"
#include "protocols/credentials.hpp"
#include "protocols/json_input.hpp"
#include "protocols/lock_commands.hpp"

using namespace lockbridge::protocol;
using nlohmann::json;
using bytes = std::vector<std::uint8_t>;

namespace {

/// `depth` nested one-item arrays around a zero.
bytes nested_arrays(std::size_t depth) {
  bytes out(depth, 0x81);
  out.push_back(0x00);
  return out;
}

bool mentions(const lockbridge::input_error& e, const std::string& part) {
  return e.to_string().find(part) != std::string::npos;
}

} // namespace

TEST_SUITE("protocols") {

TEST_CASE("hostile input: an expiry beyond int64 is refused before it is made signed") {
  for (const char* huge : {"9223372036854775808", "18446744073709551615",
                           "18446744073709551614", "253402300800000"}) {
    CAPTURE(huge);
    auto c = decode_lock_command(
      std::string{R"({"schema":"lockbridge/lock-command/1","id":"c1","lock":"lock-01",)"}
      + R"("op":"lock","expires_at":)" + huge + "}");
    REQUIRE_FALSE(c);
    CHECK(c.error().field == "expires_at");
  }
  auto last = decode_lock_command(R"({"schema":"lockbridge/lock-command/1","id":"c1",)"
                                  R"("lock":"lock-01","op":"lock","expires_at":253402300799999})");
  REQUIRE(last);
  CHECK(last->expires_at == 253402300799999);
}

TEST_CASE("hostile input: a CBOR array header claiming 2^64-1 items does not throw") {
  // The state notification that crashed the gateway from libcoap's thread.
  bytes huge_array{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  bytes in_a_map{0xa1, 0x62, 'f', 'w', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  bytes huge_map{0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  bytes huge_text{0xa1, 0x62, 'f', 'w', 0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  for (const auto& b : {huge_array, in_a_map, huge_map, huge_text}) {
    auto st = decode_lock_state(b);
    REQUIRE_FALSE(st);
    CHECK(mentions(st.error(), "at byte"));
    CHECK_FALSE(decode_lock_answer(b));
    CHECK_FALSE(decode_lock_request(b));
  }
  CHECK(mentions(decode_lock_state(huge_array).error(), "cannot fit"));
}

TEST_CASE("hostile input: 4,000 nested arrays never reach a recursive parser") {
  auto deep = nested_arrays(4000);
  REQUIRE(deep.size() <= lock_command_limits::max_message_bytes);
  auto answer = decode_lock_answer(deep);
  REQUIRE_FALSE(answer);
  CHECK(mentions(answer.error(), "nested more than 2 deep"));
  CHECK_FALSE(decode_lock_request(deep));
  // A state notification of that depth is past its size limit; one that fits
  // is refused for its depth.
  CHECK(mentions(decode_lock_state(deep).error(), "exceeds the limit"));
  auto within = nested_arrays(500);
  CHECK(mentions(decode_lock_state(within).error(), "nested more than 2 deep"));
  // Maps nest the same way.
  bytes maps;
  for (int i = 0; i < 1000; ++i)
    maps.insert(maps.end(), {0xa1, 0x61, 'k'});
  maps.push_back(0x00);
  CHECK(mentions(decode_lock_answer(maps).error(), "nested more than 2 deep"));
  // Indefinite-length ones too.
  bytes open(3000, 0x9f);
  CHECK_FALSE(decode_lock_answer(open));
}

TEST_CASE("hostile input: a lock's text that is not UTF-8 never reaches dump()") {
  // {"id": "c1", "result": "failed", "detail": "\xe2\x82"} (cut in the middle)
  json doc{{"id", "c1"}, {"result", "failed"}};
  auto cbor = json::to_cbor(doc);
  cbor[0] = 0xa3;
  for (auto b : bytes{0x66, 'd', 'e', 't', 'a', 'i', 'l', 0x62, 0xe2, 0x82})
    cbor.push_back(b);
  auto a = decode_lock_answer(cbor);
  REQUIRE_FALSE(a);
  CHECK(mentions(a.error(), "not valid UTF-8"));
  // An id that is not UTF-8 either.
  bytes bad_id{0xa2, 0x62, 'i', 'd', 0x61, 0x9f, 0x66, 'r', 'e', 's', 'u', 'l', 't',
               0x64, 'd', 'o', 'n', 'e'};
  CHECK(mentions(decode_lock_answer(bad_id).error(), "not valid UTF-8"));
}

TEST_CASE("hostile input: a repeated key in a lock's map is refused") {
  bytes twice{0xa2, 0x62, 'i', 'd', 0x61, 'a', 0x62, 'i', 'd', 0x61, 'b'};
  auto a = decode_lock_answer(twice);
  REQUIRE_FALSE(a);
  CHECK(mentions(a.error(), "appears twice"));
}

TEST_CASE("hostile input: the shape check itself") {
  CHECK_FALSE(cbor::check_shape(json::to_cbor(json{{"a", {1, 2.5, nullptr, true}}}), 2));
  CHECK(cbor::check_shape(bytes{}, 2).value() == "truncated CBOR at byte 0");
  CHECK(cbor::check_shape(bytes{0x00, 0x00}, 2).value().find("bytes after the item")
        != std::string::npos);
  CHECK(cbor::check_shape(bytes{0xc1, 0x00}, 2).value().find("tagged") != std::string::npos);
  CHECK(cbor::check_shape(bytes{0xf7}, 2).value().find("simple value") != std::string::npos);
  CHECK(cbor::check_shape(bytes{0xa1, 0x01, 0x02}, 2).value().find("map key")
        != std::string::npos);
  CHECK(cbor::check_shape(bytes{0xbf, 0x61, 'a', 0xff}, 2).value().find("without its value")
        != std::string::npos);
  CHECK(cbor::check_shape(bytes{0x9f, 0x01}, 2).value().find("truncated") != std::string::npos);
  CHECK_FALSE(cbor::check_shape(bytes{0x9f, 0x01, 0x9f, 0xff, 0xff}, 2));
}

TEST_CASE("hostile input: a stored credential with a repeated field is damaged") {
  credential c;
  c.subject = "sub-1";
  c.doors = {"front"};
  c.version = 3;
  auto good = encode_credential(c);
  REQUIRE(decode_credential(good));
  // {"s": "sub-1", "d": ["front"], "d": ["front"], "v": 3}: a second door list.
  auto twice = good;
  twice[0] = static_cast<std::uint8_t>(twice[0] + 1);
  bytes doors{0x61, 'd', 0x81, 0x65, 'f', 'r', 'o', 'n', 't'};
  twice.insert(twice.end() - 3, doors.begin(), doors.end()); // before "v": 3
  auto out = decode_credential(twice);
  REQUIRE_FALSE(out);
  CHECK(mentions(out.error(), "appears twice"));
  // f and F are one field (valid_from as an instant or a local time).
  credential bounded = c;
  bounded.valid_from = time_bound{false, 1000};
  auto both = encode_credential(bounded);
  both[0] = static_cast<std::uint8_t>(both[0] + 1);
  bytes local_from{0x61, 'F', 0x01};
  both.insert(both.end() - 3, local_from.begin(), local_from.end());
  CHECK_FALSE(decode_credential(both));
}

TEST_CASE("hostile input: cloud JSON is as strict as lock input") {
  auto twice = decode_lock_command(
    R"({"schema":"lockbridge/lock-command/1","id":"c1","lock":"lock-01","op":"lock",)"
    R"("op":"unlock","expires_at":1})");
  REQUIRE_FALSE(twice);
  CHECK(twice.error().field == "op");
  CHECK(mentions(twice.error(), "appears twice"));
  std::string deep = R"({"schema":"lockbridge/lock-command/1","id":)" + std::string(1000, '[')
                     + std::string(1000, ']') + "}";
  CHECK(mentions(decode_lock_command(deep).error(), "nested more than"));
  // One credential named by two operations of a delta, by position only.
  json d = {{"schema", "lockbridge/credentials-delta/1"}, {"id", "cmd-2"}, {"base_version", 7},
            {"version", 8}, {"revoke", {"04A1"}},
            {"upsert", {{{"cred", "04A1"}, {"subject", "sub-1"}, {"doors", {"front"}}}}}};
  auto delta = decode_credential_delta(d.dump());
  REQUIRE_FALSE(delta);
  CHECK(delta.error().field == "upsert[0].cred");
  CHECK(mentions(delta.error(), "revoke[0]"));
  CHECK_FALSE(mentions(delta.error(), "04A1"));
  d["upsert"] = json::array();
  d["delete"] = {"04A1"};
  CHECK(decode_credential_delta(d.dump()).error().field == "delete[0]");
  d["delete"] = json::array();
  d["revoke"] = {"04A1", "04A1"};
  CHECK(decode_credential_delta(d.dump()).error().field == "revoke[1]");
  // A snapshot chunk that names one credential twice.
  json s = {{"schema", "lockbridge/credentials-snapshot/1"}, {"id", "cmd-1"}, {"snapshot", "s1"},
            {"version", 7}, {"chunk", 1}, {"chunks", 1},
            {"credentials", {{{"cred", "A"}, {"subject", "x"}, {"doors", {"*"}}},
                             {{"cred", "A"}, {"subject", "y"}, {"doors", {"*"}}}}}};
  CHECK(decode_snapshot_chunk(s.dump()).error().field == "credentials[1].cred");
}

TEST_CASE("hostile input: the id of a bad command is still found, without a DOM") {
  CHECK(command_id_of(R"({"schema":"x","id":"cmd-9","credentials":[)") == "cmd-9");
  CHECK(command_id_of(R"({"credentials":[{"id":"inner"}],"id":"outer"})") == "outer");
  CHECK_FALSE(command_id_of(R"({"credentials":[{"id":"inner"}]})"));
  CHECK_FALSE(command_id_of(R"({"id":5})"));
  CHECK_FALSE(command_id_of(R"(["id","x"])"));
  CHECK_FALSE(command_id_of(R"("id")"));
  CHECK_FALSE(command_id_of(""));
}

TEST_CASE("hostile input: text from outside is shortened and written without throwing") {
  std::string name = "\xe2\x82\xac\xe2\x82\xac"; // two euro signs, 3 bytes each
  CHECK(utf8_prefix(name, 4) == "\xe2\x82\xac");
  CHECK(utf8_prefix(name, 6) == name);
  CHECK(utf8_prefix(name, 2).empty());
  json doc{{"command", std::string{"cut\xe2\x82"}}};
  CHECK_THROWS(doc.dump());
  CHECK(dump_safe(doc) == "{\"command\":\"cut\xef\xbf\xbd\"}");
  command_result r;
  r.id = "c1";
  r.command = "lock\x9f";
  r.status = "error";
  r.error = lockbridge::input_error{"x\xff", "y"};
  CHECK_NOTHROW(encode_command_result("s", "g", r));
}

}

TEST_SUITE("protocols") {

TEST_CASE("hostile input: an access request's credential must be UTF-8 (found by fuzzing)") {
  // {"cred": "CAR" + 0x9a + "o", "door": "door-01", "ts": ...}
  bytes request{0xa3, 0x64, 'c', 'r', 'e', 'd', 0x65, 'C', 'A', 'R', 0x9a, 'o', 0x64, 'd', 'o',
                'o', 'r', 0x67, 'd', 'o', 'o', 'r', '-', '0', '1', 0x62, 't', 's', 0x01};
  auto r = decode_access_request(request);
  REQUIRE_FALSE(r);
  CHECK(r.error().field == "cred");
  CHECK(mentions(r.error(), "UTF-8"));
}

TEST_CASE("hostile input: a negative integer below -2^63 is refused by the shape check") {
  bytes state{0xa1, 0x67, 'b', 'a', 't', 't', 'e', 'r', 'y', 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff,
              0xff, 0xff, 0xff};
  auto s = decode_lock_state(state);
  REQUIRE_FALSE(s);
  CHECK(mentions(s.error(), "below -2^63"));
}

}

TEST_SUITE("protocols") {

TEST_CASE("hostile input: a credential's validity is range-checked before it is made signed") {
  for (const char* bound : {"253402300800000", "9223372036854775808", "18446744073709551615",
                            "-1"}) {
    CAPTURE(bound);
    auto text = std::string{R"({"schema":"lockbridge/credentials-snapshot/1","id":"c","snapshot":)"}
                + R"("s","version":1,"chunk":1,"chunks":1,"credentials":[{"cred":"A",)"
                + R"("subject":"x","doors":["*"],"valid_until":)" + bound + "}]}";
    auto chunk = decode_snapshot_chunk(text);
    REQUIRE_FALSE(chunk);
    CHECK(chunk.error().field == "credentials[0].valid_until");
  }
}

}
