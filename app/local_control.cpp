#include "local_control.hpp"

#include <array>
#include <charconv>

#include <spdlog/spdlog.h>

#include "store/journal.hpp"

namespace lockbridge {

void add_pending_by_lock(nlohmann::json& doc, const store::journal& journal, std::size_t max) {
  if (!doc.contains("lock_table") || !doc["lock_table"].is_array())
    return;
  auto counted = journal.pending_by_lock(max);
  for (auto& row : doc["lock_table"]) {
    auto it = counted.by_lock.find(row.value("id", ""));
    row["pending"] = it == counted.by_lock.end() ? 0 : it->second;
  }
  doc["pending_complete"] = counted.complete;
}

namespace {

// The levels gateway.log_level accepts, in spdlog's order.
constexpr std::array<std::string_view, 5> level_names{"trace", "debug", "info", "warn", "error"};

std::optional<int> level_of(std::string_view name) {
  for (std::size_t i = 0; i < level_names.size(); ++i)
    if (level_names[i] == name)
      return static_cast<int>(i);
  return std::nullopt;
}

std::string name_of(int level) {
  auto name = spdlog::level::to_string_view(static_cast<spdlog::level::level_enum>(level));
  return {name.data(), name.size()};
}

std::string refuse(const std::string& why) {
  return nlohmann::json{{"error", why}}.dump();
}

} // namespace

log_level_control::log_level_control(audit_fn audit)
  : audit_(std::move(audit)), thread_([this] { wait_and_restore(); }) {}

log_level_control::~log_level_control() {
  {
    std::lock_guard guard{mutex_};
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::string log_level_control::request(std::string_view args) {
  auto space = args.find(' ');
  auto name = args.substr(0, space);
  auto level = level_of(name);
  if (!level)
    return refuse("log level \"" + std::string{name.substr(0, 32)}
                  + "\": expected one of trace, debug, info, warn, error");
  std::int64_t seconds = 0;
  if (space != std::string_view::npos) {
    auto text = args.substr(space + 1);
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (ec != std::errc{} || end != text.data() + text.size() || seconds < 0
        || seconds > max_seconds)
      return refuse("duration: expected whole seconds from 0 (until restart or reload) to "
                    + std::to_string(max_seconds) + " (7 days)");
  }
  int previous = 0;
  {
    std::lock_guard guard{mutex_};
    previous = static_cast<int>(spdlog::get_level());
    // A change over a temporary one goes back to what was in force before both.
    int restore = temporary_ ? temporary_->restore : previous;
    if (seconds > 0)
      temporary_ = temporary{std::chrono::steady_clock::now() + std::chrono::seconds{seconds},
                             restore, *level};
    else
      temporary_.reset();
    spdlog::set_level(static_cast<spdlog::level::level_enum>(*level));
  }
  wake_.notify_all();
  spdlog::warn("log level set to {} (was {}) from the local socket{}", name_of(*level),
               name_of(previous),
               seconds > 0 ? " for " + std::to_string(seconds) + " s" : std::string{});
  nlohmann::json detail{{"level", name_of(*level)}, {"previous", name_of(previous)},
                        {"for_s", seconds}};
  audit_("log_level_changed", detail);
  detail["ok"] = true;
  return detail.dump();
}

void log_level_control::wait_and_restore() {
  std::unique_lock guard{mutex_};
  for (;;) {
    if (stopping_)
      return;
    if (!temporary_) {
      wake_.wait(guard);
      continue;
    }
    auto until = temporary_->until;
    if (wake_.wait_until(guard, until) != std::cv_status::timeout)
      continue;
    if (!temporary_ || temporary_->until != until)
      continue;
    auto t = *temporary_;
    temporary_.reset();
    // A reload that set another level meanwhile wins: leave it.
    if (static_cast<int>(spdlog::get_level()) != t.set)
      continue;
    spdlog::set_level(static_cast<spdlog::level::level_enum>(t.restore));
    guard.unlock();
    spdlog::warn("log level back to {} (the temporary {} ended)", name_of(t.restore),
                 name_of(t.set));
    audit_("log_level_restored", {{"level", name_of(t.restore)}, {"was", name_of(t.set)}});
    guard.lock();
  }
}

} // namespace lockbridge
