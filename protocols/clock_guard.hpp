#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace lockbridge::protocol {

/// The system clock in Unix milliseconds (for records and status; decisions
/// use clock_guard).
inline std::int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// The gateway's notion of "now" for access decisions and `GET /v1/time`.
/// It never goes backwards: a box without a real-time clock may boot with a
/// clock in the past (before NTP syncs), or the clock may be set back; either
/// would re-open credentials that have expired. So "now" is the system clock
/// or, if that is behind, the last "now" advanced by the monotonic clock;
/// across restarts the saved high-water mark plays that role.
class clock_guard {
public:
  /// `saved_high_water`: the highest time saved before (Unix ms; 0 if none).
  explicit clock_guard(std::int64_t saved_high_water) : last_(saved_high_water) {}

  struct reading {
    std::int64_t now = 0;       ///< the time to use, Unix ms
    std::int64_t behind_ms = 0; ///< how far the system clock is behind it (0: not)
  };

  /// Reads the clocks. Thread-safe.
  reading read() { return read(unix_ms_now(), std::chrono::steady_clock::now()); }

  /// The same with given clock readings (tests).
  reading read(std::int64_t system_ms, std::chrono::steady_clock::time_point steady) {
    std::lock_guard lock{mutex_};
    std::int64_t carried = last_;
    if (have_steady_)
      carried += std::chrono::duration_cast<std::chrono::milliseconds>(steady - last_steady_)
                   .count();
    reading r;
    r.now = std::max(system_ms, carried);
    r.behind_ms = r.now - system_ms;
    last_ = r.now;
    last_steady_ = steady;
    have_steady_ = true;
    return r;
  }

  /// The highest "now" handed out, to be saved.
  std::int64_t high_water() {
    std::lock_guard lock{mutex_};
    return last_;
  }

private:
  std::mutex mutex_;
  std::int64_t last_;
  std::chrono::steady_clock::time_point last_steady_{};
  bool have_steady_ = false;
};

} // namespace lockbridge::protocol
