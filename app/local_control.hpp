#pragma once

// What the daemon answers on its local socket besides the supervisor's
// status: each lock's events waiting (read from the journal on request) and
// the log level changed at run time. Kept free of CAF.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

namespace lockbridge::store {
class journal;
}

namespace lockbridge {

/// At most this many journal entries are read to count each lock's events
/// waiting (about a second's work on a small box); beyond, the counts say
/// "at least" (`pending_complete` false).
inline constexpr std::size_t pending_scan_limit = 200'000;

/// Adds `pending` to each row of `doc["lock_table"]`, and `pending_complete`.
void add_pending_by_lock(nlohmann::json& doc, const store::journal& journal,
                         std::size_t max = pending_scan_limit);

/// `lockbridge log-level LEVEL [--for DURATION]`: the request is
/// `log-level LEVEL SECONDS` (0: until the next restart or reload). After
/// SECONDS the level in force before goes back, unless a reload set another
/// one meanwhile. Every change is audited through `audit`.
class log_level_control {
public:
  using audit_fn = std::function<void(std::string_view action, nlohmann::json detail)>;
  static constexpr std::int64_t max_seconds = 7 * 24 * 3600;

  explicit log_level_control(audit_fn audit);
  ~log_level_control();
  log_level_control(const log_level_control&) = delete;
  log_level_control& operator=(const log_level_control&) = delete;

  /// Answers `args` ("LEVEL SECONDS") with a JSON document: {"ok": true,
  /// "level", "previous", "for_s"} or {"error": "..."}; a bad request
  /// changes nothing.
  std::string request(std::string_view args);

private:
  void wait_and_restore();

  audit_fn audit_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  /// A temporary change in force: when it ends, the level to go back to,
  /// and the level it set (a reload may have changed it since).
  struct temporary {
    std::chrono::steady_clock::time_point until;
    int restore = 0;
    int set = 0;
  };
  std::optional<temporary> temporary_;
  std::thread thread_;
};

} // namespace lockbridge
