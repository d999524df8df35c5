#include "actors/lock_presence.hpp"

#include <spdlog/spdlog.h>

namespace lockbridge {

lock_presence::publication lock_presence::make(const std::string& lock, bool available,
                                               std::int64_t last_seen) const {
  publication p{lock, available, last_seen, std::nullopt, false};
  if (auto it = states_.find(lock); it != states_.end())
    p.state = it->second;
  return p;
}

std::vector<lock_presence::publication> lock_presence::survey(const seen_list& seen,
                                                              std::int64_t now, bool all) {
  std::vector<publication> out;
  std::map<std::string, bool> next;
  for (const auto& [lock, last] : seen) {
    bool available = last != 0 && now - last <= silence_ms_;
    next[lock] = available;
    clearing_.erase(lock); // configured again
    auto before = available_.find(lock);
    bool changed = before == available_.end() || before->second != available;
    if (changed && before != available_.end())
      spdlog::info("locks: {} is {} (last heard {} s ago)", lock,
                   available ? "available again" : "UNAVAILABLE",
                   last == 0 ? -1 : (now - last) / 1000);
    if (changed || all)
      out.push_back(make(lock, available, last));
  }
  // A lock a reload removed: its retained state is deleted at the broker.
  for (const auto& [lock, available] : available_)
    if (!next.contains(lock)) {
      clearing_.insert(lock);
      states_.erase(lock);
      published_at_.erase(lock);
      waiting_.erase(lock);
    }
  for (const auto& lock : clearing_)
    out.push_back({lock, false, 0, std::nullopt, true});
  available_ = std::move(next);
  return out;
}

std::optional<lock_presence::publication>
lock_presence::observed(const std::string& lock, const protocol::lock_state& state,
                        std::int64_t last_seen, std::int64_t now) {
  auto& known = states_[lock];
  auto before = available_.find(lock);
  if (known == state && before != available_.end())
    return std::nullopt;
  known = state;
  if (before != available_.end() && !before->second)
    spdlog::info("locks: {} is available again (it notified its state)", lock);
  available_[lock] = true; // it just spoke
  auto last = published_at_.find(lock);
  if (last != published_at_.end() && now - last->second < state_interval_ms) {
    waiting_.insert(lock); // coalesced: due() publishes the latest
    return std::nullopt;
  }
  return make(lock, true, last_seen);
}

std::vector<lock_presence::publication> lock_presence::waiting(const seen_list& seen) const {
  std::vector<publication> out;
  for (const auto& [lock, last] : seen) {
    if (!waiting_.contains(lock))
      continue;
    auto available = available_.find(lock);
    out.push_back(make(lock, available != available_.end() && available->second, last));
  }
  return out;
}

void lock_presence::sent(const publication& p, std::int64_t now) {
  if (p.clear) {
    clearing_.erase(p.lock);
    return;
  }
  published_at_[p.lock] = now;
  waiting_.erase(p.lock);
}

std::size_t lock_presence::available_count() const {
  std::size_t n = 0;
  for (const auto& [lock, available] : available_)
    n += available ? 1 : 0;
  return n;
}

} // namespace lockbridge
