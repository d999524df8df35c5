#include "transports/contain.hpp"

#include <atomic>
#include <chrono>

#include <spdlog/spdlog.h>

#include "protocols/log_fields.hpp"

namespace lockbridge::transport {

namespace {

std::atomic<std::int64_t> next_report_ns{0};
std::atomic<std::uint64_t> held_back{0};

} // namespace

void report_escaped(const char* where, const char* what) noexcept {
  try {
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto next = next_report_ns.load(std::memory_order_relaxed);
    if (now < next
        || !next_report_ns.compare_exchange_strong(
          next, now + std::chrono::nanoseconds{std::chrono::seconds{10}}.count())) {
      held_back.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    auto held = held_back.exchange(0, std::memory_order_relaxed);
    spdlog::error("{}: internal error, contained (the peer gets an error answer, the gateway "
                  "goes on): {}{}",
                  where, protocol::printable_text(what),
                  held > 0 ? fmt::format(" ({} more not logged in the last 10 s)", held)
                           : std::string{});
  } catch (...) {
    // Logging failed (no memory): nothing more can be done here.
  }
}

} // namespace lockbridge::transport
