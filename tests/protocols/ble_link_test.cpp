#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <string>

#include "protocols/ble_link.hpp"

using namespace lockbridge::protocol::ble;

namespace {

bytes from_hex(std::string_view hex) {
  bytes out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string{hex.substr(i, 2)}, nullptr, 16)));
  return out;
}

bytes sample(std::size_t n) {
  bytes b(n);
  for (std::size_t i = 0; i < n; ++i)
    b[i] = static_cast<std::uint8_t>(i * 7 + 3);
  return b;
}

} // namespace

TEST_CASE("fragments fit the ATT MTU and reassemble in any order, duplicates ignored") {
  auto message = sample(1000);
  auto parts = fragment(7, message, 23);
  REQUIRE(parts.ok());
  CHECK(parts->size() == 63); // 16 bytes of chunk per 20-byte ATT value
  for (const auto& p : *parts)
    CHECK(p.size() <= 20);
  auto shuffled = *parts;
  std::reverse(shuffled.begin(), shuffled.end());
  reassembler r{2000};
  bytes got;
  for (std::size_t i = 0; i < shuffled.size(); ++i) {
    auto o = r.add(shuffled[i], 0);
    if (i == 3) // the same fragment again
      CHECK(r.add(shuffled[i], 0).result == reassembler::outcome::what::duplicate);
    if (o.result == reassembler::outcome::what::complete)
      got = o.message;
  }
  CHECK(got == message);
  CHECK(r.in_assembly() == 0);
}

TEST_CASE("a message missing a fragment is dropped after the timeout") {
  auto parts = fragment(9, sample(100), 23);
  REQUIRE(parts.ok());
  reassembler r{2000};
  for (std::size_t i = 0; i + 1 < parts->size(); ++i)
    CHECK(r.add((*parts)[i], 100).result == reassembler::outcome::what::partial);
  CHECK(r.expire(2000) == 0);
  CHECK(r.expire(2100) == 1);
  // The last fragment alone now starts a new, incomplete message.
  CHECK(r.add(parts->back(), 2200).result == reassembler::outcome::what::partial);
}

TEST_CASE("bad fragments are named and refused") {
  reassembler r{2000};
  CHECK(r.add(bytes{1, 2}, 0).result == reassembler::outcome::what::invalid);
  auto o = r.add(bytes{0, 1, 3, 3, 9}, 0);
  CHECK(o.result == reassembler::outcome::what::invalid);
  CHECK(o.diagnostic.find("out of range") != std::string::npos);
  CHECK(r.add(bytes{0, 1, 0, 0}, 0).result == reassembler::outcome::what::invalid);
  CHECK_FALSE(fragment(1, sample(255 * 16 + 1), 23).ok());
  CHECK(fragment(1, sample(255 * 16), 23).ok());
  CHECK_FALSE(fragment(1, sample(10), 22).ok());
}

TEST_CASE("assembly holds at most four messages") {
  reassembler r{2000};
  for (std::uint8_t id = 0; id < 10; ++id)
    r.add(bytes{0, id, 0, 2, 0xaa}, id);
  CHECK(r.in_assembly() == 4);
}

TEST_CASE("session keys and sealing match an independent implementation") {
  // Computed with python3-cryptography's HKDF and AESGCM (the test fixture's lock).
  auto psk = sample(0);
  for (std::uint8_t i = 0; i < 16; ++i)
    psk.push_back(i);
  std::array<std::uint8_t, 16> g{}, l{};
  for (std::uint8_t i = 0; i < 16; ++i) {
    g[i] = static_cast<std::uint8_t>(0xa0 + i);
    l[i] = static_cast<std::uint8_t>(0x50 + i);
  }
  auto keys = derive_session_keys(psk, "lock-7", g, l);
  CHECK(bytes(keys.to_lock.begin(), keys.to_lock.end())
        == from_hex("5482d5a85215f78bbac33a62f113a15d59401164dced8703f696612dd17b982a"));
  CHECK(bytes(keys.from_lock.begin(), keys.from_lock.end())
        == from_hex("9b4f6f3bd17c348fd9449676a3f584d1fe83faa4313f478cfdc38829fe832407"));
  std::string text = "hello lock";
  auto sealed = seal(keys.from_lock, kind::events, 5, bytes(text.begin(), text.end()));
  CHECK(sealed
        == from_hex("011100000000000000056b29cdc2fc29c79e168bb995c777d1bde670ed08105726cf39a9"));
  auto o = open(keys.from_lock, sealed);
  REQUIRE(o.ok());
  CHECK(o->what == kind::events);
  CHECK(o->counter == 5);
  CHECK(std::string(o->body.begin(), o->body.end()) == text);
}

TEST_CASE("a sealed message with any bit flipped, or under the other key, does not open") {
  std::array<std::uint8_t, 16> g{}, l{};
  auto keys = derive_session_keys(sample(32), "lock-1", g, l);
  auto sealed = seal(keys.from_lock, kind::access, 1, sample(40));
  CHECK_FALSE(open(keys.to_lock, sealed).ok());
  for (std::size_t bit = 0; bit < sealed.size() * 8; bit += 5) {
    auto copy = sealed;
    copy[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    CHECK_FALSE(open(keys.from_lock, copy).ok());
  }
  CHECK(open(keys.from_lock, sealed).ok());
}

TEST_CASE("headers and answers are checked") {
  CHECK_FALSE(peek(bytes{2, 0x11}).ok());
  CHECK(peek(bytes{1, 0x77, 0, 0, 0, 0, 0, 0, 0, 0}).error().field == "kind");
  CHECK_FALSE(peek(bytes{1, 0x01, 3}).ok());
  std::array<std::uint8_t, 16> nonce{};
  nonce[3] = 9;
  auto hello = peek(encode_hello(kind::hello, nonce));
  REQUIRE(hello.ok());
  CHECK(hello->body == bytes(nonce.begin(), nonce.end()));
  auto a = decode_answer(encode_answer({42, 204, {1, 2}}));
  REQUIRE(a.ok());
  CHECK(a->re == 42);
  CHECK(a->code == 204);
  CHECK(a->payload == bytes{1, 2});
  CHECK_FALSE(decode_answer(bytes{0, 0, 0}).ok());
  CHECK(decode_answer(encode_answer({1, 99, {}})).error().field == "code");
  // {"retry_after_s": 30} in CBOR
  CHECK(encode_retry_after(30)
        == bytes{0xa1, 0x6d, 'r', 'e', 't', 'r', 'y', '_', 'a', 'f', 't', 'e', 'r', '_', 's', 0x18, 30});
}
