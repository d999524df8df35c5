#include "transports/ble_session.hpp"

#include <doctest/doctest.h>

#include <array>
#include <vector>

using namespace lockbridge::transport;
namespace ble = lockbridge::protocol::ble;
using verdict = ble_session::verdict_kind;

namespace {

const std::vector<std::uint8_t> psk(32, 0x5a);

/// The lock's side of a session, played with the protocol's own functions.
struct lock_side {
  std::array<std::uint8_t, ble::nonce_bytes> nonce{};
  ble::session_keys keys;
  std::uint64_t counter = 0;

  /// Answers the gateway's hello; derives the lock's copy of the keys.
  ble::bytes answer(const ble::bytes& hello, std::string_view lock_id = "lock-b1") {
    auto h = ble::peek(hello);
    REQUIRE(h);
    REQUIRE(h->what == ble::kind::hello);
    nonce.fill(0x11);
    std::array<std::uint8_t, ble::nonce_bytes> gateway{};
    std::copy(h->body.begin(), h->body.end(), gateway.begin());
    keys = ble::derive_session_keys(psk, lock_id, gateway, nonce);
    return ble::encode_hello(ble::kind::hello_answer, nonce);
  }
  ble::bytes events(const std::vector<std::uint8_t>& body) {
    return ble::seal(keys.from_lock, ble::kind::events, ++counter, body);
  }
};

} // namespace

TEST_SUITE("transports") {

TEST_CASE("ble session: a handshake, then authentic messages both ways") {
  ble_session s;
  lock_side lock;
  CHECK_FALSE(s.established());
  CHECK_FALSE(s.seal(ble::kind::command, std::vector<std::uint8_t>{1}).has_value());
  auto v = s.accept(psk, "lock-b1", lock.answer(s.hello()));
  CHECK(v.result == verdict::established);
  CHECK(s.established());

  auto got = s.accept(psk, "lock-b1", lock.events({0xA1, 0x01}));
  REQUIRE(got.result == verdict::authentic);
  REQUIRE(got.message);
  CHECK(got.message->what == ble::kind::events);
  CHECK(got.message->body == std::vector<std::uint8_t>{0xA1, 0x01});

  // The gateway's messages open under the lock's copy of the to-lock key.
  auto sealed = s.seal(ble::kind::command, std::vector<std::uint8_t>{7, 8});
  REQUIRE(sealed);
  CHECK(s.last_sent() == 1);
  auto opened = ble::open(lock.keys.to_lock, *sealed);
  REQUIRE(opened);
  CHECK(opened->counter == 1);
  CHECK(opened->body == std::vector<std::uint8_t>{7, 8});
}

TEST_CASE("ble session: replays, forgeries and messages out of turn are refused") {
  ble_session s;
  lock_side lock;
  auto hello = s.hello();
  // Sealed before the handshake completed.
  CHECK(s.accept(psk, "lock-b1", ble::seal({}, ble::kind::events, 1, std::vector<std::uint8_t>{}))
          .result
        == verdict::forged);
  REQUIRE(s.accept(psk, "lock-b1", lock.answer(hello)).result == verdict::established);
  // A second hello answer in an established session.
  CHECK(s.accept(psk, "lock-b1", ble::encode_hello(ble::kind::hello_answer, lock.nonce)).result
        == verdict::forged);

  auto first = lock.events({1});
  auto second = lock.events({2});
  CHECK(s.accept(psk, "lock-b1", second).result == verdict::authentic);
  auto replay = s.accept(psk, "lock-b1", first); // older counter
  CHECK(replay.result == verdict::replayed);
  CHECK(replay.reason.find("counter 1, last 2") != std::string::npos);
  CHECK(s.accept(psk, "lock-b1", second).result == verdict::replayed); // the same again

  auto altered = lock.events({3});
  altered.back() ^= 0x01;
  CHECK(s.accept(psk, "lock-b1", altered).result == verdict::forged);
  // Sealed under another lock's keys (the lock id is in the key derivation).
  lock_side other;
  ble_session s2;
  REQUIRE(s2.accept(psk, "lock-b2", other.answer(s2.hello(), "lock-b1")).result
          == verdict::established);
  CHECK(s2.accept(psk, "lock-b2", other.events({4})).result == verdict::forged);
  // A kind only the gateway sends, and bytes that are not the protocol.
  CHECK(s.accept(psk, "lock-b1", ble::encode_hello(ble::kind::hello, lock.nonce)).result
        == verdict::forged);
  CHECK(s.accept(psk, "lock-b1", std::vector<std::uint8_t>{0x09, 0x09}).result
        == verdict::forged);
}

TEST_CASE("ble session: a new hello forgets the last session's keys and counters") {
  ble_session s;
  lock_side lock;
  REQUIRE(s.accept(psk, "lock-b1", lock.answer(s.hello())).result == verdict::established);
  auto old_message = lock.events({1});
  REQUIRE(s.seal(ble::kind::command, std::vector<std::uint8_t>{}));
  s.end();
  CHECK_FALSE(s.established());
  CHECK(s.last_sent() == 0);
  CHECK(s.accept(psk, "lock-b1", old_message).result == verdict::forged);

  lock_side again;
  REQUIRE(s.accept(psk, "lock-b1", again.answer(s.hello())).result == verdict::established);
  // The last session's message does not open under the new keys.
  CHECK(s.accept(psk, "lock-b1", old_message).result == verdict::forged);
  CHECK(s.accept(psk, "lock-b1", again.events({2})).result == verdict::authentic);
}

}
