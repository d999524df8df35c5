#include "actors/stall_meter.hpp"

#include <algorithm>

namespace lockbridge {

std::int64_t stall_meter::index_of(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()) / bucket_width;
}

void stall_meter::beat(clock::time_point due, clock::time_point ran) {
  auto late = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(ran - due),
                       std::chrono::milliseconds{0});
  auto index = index_of(ran);
  auto& b = ring_[static_cast<std::size_t>(index) % buckets];
  if (b.index != index)
    b = bucket{index, std::chrono::milliseconds{0}};
  b.longest = std::max(b.longest, late);
}

std::chrono::milliseconds stall_meter::longest(clock::time_point now) const {
  // The buckets that overlap the last `span`: a stall up to 10 s older than
  // the span may still count (it is shown a little longer, never shorter).
  auto newest = index_of(now);
  auto oldest = newest - static_cast<std::int64_t>(buckets) + 1;
  std::chrono::milliseconds out{0};
  for (const auto& b : ring_)
    if (b.index >= oldest && b.index <= newest)
      out = std::max(out, b.longest);
  return out;
}

} // namespace lockbridge
