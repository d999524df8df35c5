#include "actors/stall_meter.hpp"

#include <doctest/doctest.h>

using namespace lockbridge;
using namespace std::chrono_literals;
using clock_type = stall_meter::clock;

TEST_SUITE("actors") {

TEST_CASE("stall meter: the longest lateness of the last minute, forgotten after it") {
  stall_meter m;
  auto t0 = clock_type::time_point{} + 1000s;
  CHECK(m.longest(t0) == 0ms);
  m.beat(t0, t0 + 3ms);
  m.beat(t0 + 100ms, t0 + 1500ms); // a handler held the worker 1.4 s
  m.beat(t0 + 1600ms, t0 + 1600ms);
  m.beat(t0 + 2000ms, t0 + 1999ms); // early (timer rounding) counts as on time
  CHECK(m.longest(t0 + 2s) == 1400ms);
  m.beat(t0 + 30s, t0 + 30s + 200ms);
  CHECK(m.longest(t0 + 45s) == 1400ms);
  // Seventy seconds on, only the 200 ms stall is within the minute.
  CHECK(m.longest(t0 + 85s) == 200ms);
  CHECK(m.longest(t0 + 200s) == 0ms);
}

TEST_CASE("stall meter: a beat long after the last reuses the ring without old figures") {
  stall_meter m;
  auto t0 = clock_type::time_point{} + 5000s;
  for (int i = 0; i < 7; ++i)
    m.beat(t0 + i * 10s, t0 + i * 10s + std::chrono::milliseconds{100 * (i + 1)});
  CHECK(m.longest(t0 + 60s) == 700ms);
  auto later = t0 + 3600s;
  m.beat(later, later + 5ms);
  CHECK(m.longest(later) == 5ms);
}

}
