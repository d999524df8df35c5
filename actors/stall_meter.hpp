#pragma once
// How long CAF's one worker was held: the uplink sends itself a heartbeat
// every 100 ms and tells this meter when each was due and when it ran. A
// handler that blocks the worker (a durable write, a network wait) delays
// every message behind it, the heartbeat too, so the lateness is the stall
// every actor on the worker saw. No CAF: unit-tested alone
// (tests/actors/stall_meter_test.cpp).

#include <array>
#include <chrono>
#include <cstdint>

namespace lockbridge {

class stall_meter {
public:
  using clock = std::chrono::steady_clock;
  static constexpr auto span = std::chrono::seconds{60};

  /// A heartbeat due at `due` ran at `ran`.
  void beat(clock::time_point due, clock::time_point ran);

  /// The longest lateness of a heartbeat that ran in the `span` before
  /// `now` (0 if none was late).
  [[nodiscard]] std::chrono::milliseconds longest(clock::time_point now) const;

private:
  static constexpr auto bucket_width = std::chrono::seconds{10};
  /// One bucket per 10 s, a ring over a little more than `span`: the index
  /// of the 10 s it covers and the longest lateness in it.
  struct bucket {
    std::int64_t index = -1;
    std::chrono::milliseconds longest{0};
  };
  static constexpr std::size_t buckets = span / bucket_width + 1;
  std::array<bucket, buckets> ring_{};

  static std::int64_t index_of(clock::time_point t);
};

} // namespace lockbridge
