// The uplink's acknowledgement window alone: PUBACKs in any order release
// only the acknowledged prefix, a lost link rewinds to just after it (so
// everything unacknowledged is sent again and nothing acknowledged is), a
// refused publish is read again without resending its neighbours, and the
// stall clock looks at the oldest unacknowledged publish.

#include "actors/ack_window.hpp"

#include <doctest/doctest.h>

using lockbridge::ack_window;
using clock_type = std::chrono::steady_clock;

namespace {

ack_window::flight publish(std::uint64_t number, std::uint64_t first, std::uint64_t last,
                           clock_type::time_point at = {}) {
  return {number, first, last, last - first + 1, at, false};
}

} // namespace

TEST_SUITE("actors") {

TEST_CASE("ack window: reading goes on after what was sent, within the capacity") {
  ack_window w{3};
  CHECK(w.next() == 0);
  CHECK(w.room() == 3);
  w.sent(publish(1, 1, 10));
  w.sent(publish(2, 11, 20));
  CHECK(w.next() == 21);
  CHECK(w.room() == 1);
  w.sent(publish(3, 21, 25));
  CHECK(w.room() == 0);
  CHECK(w.carries(15));
  CHECK(!w.carries(26));
  w.skip_to(30); // entries 26..29 did not open and were moved aside
  CHECK(w.next() == 30);
  w.skip_to(12); // never backwards
  CHECK(w.next() == 30);
}

TEST_CASE("ack window: PUBACKs out of order release only the acknowledged prefix") {
  ack_window w{8};
  for (std::uint64_t n = 1; n <= 4; ++n)
    w.sent(publish(n, n * 10 - 9, n * 10));
  REQUIRE(w.ack(3));
  REQUIRE(w.ack(2));
  auto r = w.release();
  CHECK(r.upto == 0); // the first is not acknowledged: nothing may go
  CHECK(w.acked_upto() == 0);
  REQUIRE(w.ack(1));
  r = w.release();
  CHECK(r.upto == 30);
  CHECK(r.items == 30);
  CHECK(w.acked_upto() == 30);
  CHECK(w.size() == 1);
  // A PUBACK twice, or for a number not here, changes nothing.
  CHECK(!w.ack(1));
  CHECK(!w.ack(99));
  CHECK(w.release().upto == 0);
  REQUIRE(w.ack(4));
  r = w.release();
  CHECK(r.upto == 40);
  CHECK(r.items == 10);
  CHECK(w.empty());
}

TEST_CASE("ack window: a lost link resends everything after the acknowledged prefix, and "
          "late PUBACKs of the old link are not taken") {
  ack_window w{8};
  w.sent(publish(1, 1, 10));
  w.sent(publish(2, 11, 20));
  w.sent(publish(3, 21, 30));
  w.ack(1);
  w.ack(3); // acknowledged but behind an unacknowledged one
  w.release();
  CHECK(w.acked_upto() == 10);
  w.rewind();
  CHECK(w.empty());
  CHECK(w.next() == 11); // 21..30 go again: the source still holds them
  CHECK(!w.holds(2));
  CHECK(!w.ack(2)); // from the old link
  CHECK(w.release().upto == 0);
  // The new link: numbers go on rising.
  w.sent(publish(4, 11, 30));
  w.ack(4);
  CHECK(w.release().upto == 30);
}

TEST_CASE("ack window: before any acknowledgement a rewind starts at the source's beginning") {
  ack_window w{2};
  w.sent(publish(1, 5, 9));
  w.rewind();
  CHECK(w.next() == 0);
}

TEST_CASE("ack window: a refused publish is read again; its neighbours stay in flight") {
  ack_window w{8};
  w.sent(publish(1, 1, 1));
  w.sent(publish(2, 2, 2));
  w.sent(publish(3, 3, 3));
  auto dropped = w.drop(2);
  REQUIRE(dropped);
  CHECK(dropped->first == 2);
  CHECK(w.next() == 2);
  CHECK(w.carries(3)); // not to be published twice when reading passes it
  CHECK(!w.carries(2));
  CHECK(!w.drop(2));
  w.ack(1);
  w.ack(3);
  CHECK(w.release().upto == 3);
}

TEST_CASE("ack window: the stall clock is the oldest unacknowledged publish's") {
  ack_window w{4};
  auto t0 = clock_type::now();
  CHECK(!w.oldest_unacked());
  w.sent(publish(1, 1, 1, t0));
  w.sent(publish(2, 2, 2, t0 + std::chrono::seconds{5}));
  CHECK(w.oldest_unacked() == t0);
  w.ack(1);
  CHECK(w.oldest_unacked() == t0 + std::chrono::seconds{5});
  w.ack(2);
  CHECK(!w.oldest_unacked());
}

} // TEST_SUITE
