#include "transports/ble_scheduler.hpp"

#include <algorithm>

namespace lockbridge::transport {

radio_scheduler::rank radio_scheduler::rank_of(const radio_demand& d, bool commands,
                                                     time_point now) {
  if (d.urgent)
    return access;
  if (commands)
    return command;
  if (d.advertised)
    return events;
  return now >= d.next_poll ? poll : none;
}

std::vector<std::string> radio_scheduler::pick(std::vector<candidate>& locks, std::size_t busy,
                                               time_point now) const {
  std::vector<std::string> chosen;
  while (busy < max_connections_) {
    candidate* best = nullptr;
    rank best_rank = none;
    for (auto& c : locks) {
      if (!c.free || now < c.demand->retry_at)
        continue;
      auto r = rank_of(*c.demand, c.commands, now);
      if (r == none)
        continue;
      if (best == nullptr || r > best_rank
          || (r == best_rank && c.demand->waiting_since < best->demand->waiting_since)) {
        best = &c;
        best_rank = r;
      }
    }
    if (best == nullptr)
      break;
    best->free = false;
    best->demand->next_poll = now + poll_interval_;
    chosen.push_back(best->id);
    ++busy;
  }
  return chosen;
}

std::chrono::milliseconds radio_scheduler::backoff(std::uint32_t failures) {
  return std::chrono::milliseconds{
    std::min<std::int64_t>(30'000, 250LL << std::min<std::uint32_t>(failures, 7))};
}

void radio_scheduler::failed(radio_demand& d, time_point now) {
  ++d.failures;
  d.retry_at = now + backoff(d.failures);
}

} // namespace lockbridge::transport
