#include "actors/ack_window.hpp"

#include <algorithm>

namespace lockbridge {

void ack_window::sent(const flight& f) {
  flights_.push_back(f);
  flights_.back().acked = false;
  next_ = std::max(next_, f.last + 1);
}

void ack_window::skip_to(std::uint64_t position) noexcept {
  next_ = std::max(next_, position);
}

std::optional<ack_window::flight> ack_window::ack(std::uint64_t number) {
  for (auto& f : flights_)
    if (f.number == number && !f.acked) {
      f.acked = true;
      return f;
    }
  return std::nullopt;
}

ack_window::released ack_window::release() {
  released out;
  while (!flights_.empty() && flights_.front().acked) {
    out.upto = flights_.front().last;
    out.items += flights_.front().items;
    flights_.pop_front();
  }
  if (out.upto > acked_upto_)
    acked_upto_ = out.upto;
  return out;
}

bool ack_window::holds(std::uint64_t number) const {
  return std::any_of(flights_.begin(), flights_.end(),
                     [&](const flight& f) { return f.number == number; });
}

bool ack_window::carries(std::uint64_t position) const {
  return std::any_of(flights_.begin(), flights_.end(), [&](const flight& f) {
    return f.first <= position && position <= f.last;
  });
}

std::optional<ack_window::flight> ack_window::drop(std::uint64_t number) {
  auto it = std::find_if(flights_.begin(), flights_.end(),
                         [&](const flight& f) { return f.number == number; });
  if (it == flights_.end())
    return std::nullopt;
  auto f = *it;
  flights_.erase(it);
  next_ = std::min(next_, f.first);
  return f;
}

void ack_window::rewind() noexcept {
  flights_.clear();
  next_ = acked_upto_ == 0 ? 0 : acked_upto_ + 1;
}

std::optional<ack_window::time_point> ack_window::oldest_unacked() const {
  for (const auto& f : flights_)
    if (!f.acked)
      return f.sent_at;
  return std::nullopt;
}

} // namespace lockbridge
