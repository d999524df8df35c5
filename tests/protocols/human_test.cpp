#include "protocols/human.hpp"

#include <doctest/doctest.h>

using namespace lockbridge;

TEST_SUITE("protocols") {

TEST_CASE("human: sizes in binary units with one decimal") {
  CHECK(human::bytes(0) == "0 B");
  CHECK(human::bytes(1023) == "1023 B");
  CHECK(human::bytes(1536) == "1.5 KiB");
  CHECK(human::bytes(512ull << 20) == "512.0 MiB");
  CHECK(human::bytes(3ull << 30) == "3.0 GiB");
}

TEST_CASE("human: durations in their two largest units") {
  CHECK(human::duration(45) == "45 s");
  CHECK(human::duration(192) == "3 min 12 s");
  CHECK(human::duration(180) == "3 min");
  CHECK(human::duration(7500) == "2 h 5 min");
  CHECK(human::duration(3 * 86400 + 4 * 3600 + 59) == "3 d 4 h");
  CHECK(human::duration(-90) == "1 min 30 s");
  CHECK(human::ago(0, 5000) == "never");
  CHECK(human::ago(5000, 5000) == "just now");
  CHECK(human::ago(1000, 62'000) == "1 min 1 s ago");
}

TEST_CASE("human: percentages never print noise digits") {
  CHECK(human::percent(0, 100) == "0 %");
  CHECK(human::percent(1, 0) == "0 %");
  CHECK(human::percent(2.71276e-5, 1) == "<0.1 %"); // was "0.00271276 %"
  CHECK(human::percent(1, 8) == "12.5 %");
  CHECK(human::percent(1, 1) == "100.0 %");
}

TEST_CASE("human: expiry is dated and says EXPIRED when past") {
  std::int64_t now = 1'796'083'200'000; // 2026-12-01 00:00 UTC
  CHECK(human::date(now) == "2026-12-01 00:00 UTC");
  CHECK(human::expiry(now + 364ll * 86'400'000, now) == "in 364 d (2027-11-30 00:00 UTC)");
  CHECK(human::expiry(now - 3ll * 86'400'000, now) == "EXPIRED 3 d ago (2026-11-28 00:00 UTC)");
  CHECK(human::expiry(0, now) == "unknown");
}

TEST_CASE("human: each refusal reason has its own hint") {
  CHECK(human::refusal_hint("wrong_key").starts_with("wrong PSK?"));
  CHECK(human::refusal_hint("max_sessions").find("max_sessions") != std::string_view::npos);
  CHECK(human::refusal_hint("forged") != human::refusal_hint("replayed"));
  CHECK(human::refusal_hint("???") == "see the log");
}

}
