#include "protocols/lock_commands.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace lockbridge::protocol;

TEST_SUITE("protocols") {

TEST_CASE("lock commands: a cloud command decodes and travels to the lock as CBOR") {
  auto c = decode_lock_command(R"({"schema":"lockbridge/lock-command/1","id":"cmd-1",
    "lock":"lock-01","op":"unlock","duration":5,"expires_at":1795776843000})");
  REQUIRE(c);
  CHECK(c->id == "cmd-1");
  CHECK(c->lock == "lock-01");
  CHECK(c->op == lock_op::unlock);
  CHECK(c->duration_s == 5u);
  CHECK(c->expires_at == 1795776843000);
  auto back = decode_lock_request(encode_lock_request(*c));
  REQUIRE(back);
  auto expected = *c;
  expected.lock.clear(); // the DTLS session says which lock
  CHECK(*back == expected);
}

TEST_CASE("lock commands: bad commands name the field") {
  struct row {
    std::string json, field;
  };
  const std::string head = R"({"schema":"lockbridge/lock-command/1","id":"c1","lock":"lock-01",)";
  std::vector<row> rows{
    {"{", ""},
    {"[]", ""},
    {R"({"schema":"other","id":"c1"})", "schema"},
    {head + R"("op":"explode","expires_at":1})", "op"},
    {head + R"("op":"lock","duration":5,"expires_at":1})", "duration"},
    {head + R"("op":"unlock","duration":0,"expires_at":1})", "duration"},
    {head + R"("op":"unlock","duration":3601,"expires_at":1})", "duration"},
    {head + R"("op":"unlock"})", "expires_at"},
    {head + R"("op":"unlock","expires_at":-5})", "expires_at"},
    {head + R"("op":"unlock","expires_at":1,"name":"Alice"})", "name"},
    {R"({"schema":"lockbridge/lock-command/1","id":"c/1","lock":"lock-01","op":"lock","expires_at":1})",
     "id"},
    {R"({"schema":"lockbridge/lock-command/1","id":"c1","op":"lock","expires_at":1})", "lock"},
    {std::string(5000, ' '), ""},
  };
  for (const auto& r : rows) {
    CAPTURE(r.json.substr(0, 120));
    auto c = decode_lock_command(r.json);
    REQUIRE_FALSE(c);
    CHECK(c.error().field == r.field);
  }
}

TEST_CASE("lock state: round trip, bad fields refused") {
  lock_state st{false, true, 87, "2.4.1"};
  auto back = decode_lock_state(encode_lock_state(st));
  REQUIRE(back);
  CHECK(*back == st);
  CHECK(decode_lock_state(encode_lock_state({true, false, 101, "1"})).error().field == "battery");
  CHECK(decode_lock_state(encode_lock_state({true, false, 5, "a b"})).error().field == "fw");
  CHECK(decode_lock_state(encode_lock_state({true, false, 5, ""})).error().field == "fw");
  CHECK_FALSE(decode_lock_state(std::vector<std::uint8_t>{0xa0}));
}

TEST_CASE("lock commands: the lock's answer is checked") {
  auto a = decode_lock_answer(encode_lock_answer({"c1", "done", std::nullopt}));
  REQUIRE(a);
  CHECK(a->result == "done");
  CHECK_FALSE(decode_lock_answer(encode_lock_answer({"c1", "maybe", std::nullopt})));
  CHECK_FALSE(decode_lock_answer(encode_lock_answer({"c1", "failed", std::string{"a\nb"}})));
  CHECK_FALSE(decode_lock_answer(std::vector<std::uint8_t>{0xff, 0x00}));
  CHECK(decode_lock_answer(encode_lock_answer({"c1", "refused", std::string{"jammed"}}))->detail
        == std::optional<std::string>{"jammed"});
}

}
