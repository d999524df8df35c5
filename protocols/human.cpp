#include "protocols/human.hpp"

#include <array>
#include <cstdio>
#include <ctime>

namespace lockbridge::human {

std::string bytes(std::uint64_t n) {
  static constexpr std::array<const char*, 5> units{"B", "KiB", "MiB", "GiB", "TiB"};
  if (n < 1024)
    return std::to_string(n) + " B";
  auto value = static_cast<double>(n);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < units.size()) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", value, units[unit]);
  return buf;
}

std::string duration(std::int64_t seconds) {
  auto s = static_cast<std::uint64_t>(seconds < 0 ? -seconds : seconds);
  auto two = [](std::uint64_t a, const char* ua, std::uint64_t b, const char* ub) {
    return std::to_string(a) + " " + ua + (b > 0 ? " " + std::to_string(b) + " " + ub : "");
  };
  if (s < 60)
    return std::to_string(s) + " s";
  if (s < 3600)
    return two(s / 60, "min", s % 60, "s");
  if (s < 86400)
    return two(s / 3600, "h", s % 3600 / 60, "min");
  return two(s / 86400, "d", s % 86400 / 3600, "h");
}

std::string ago(std::int64_t then_ms, std::int64_t now_ms) {
  if (then_ms == 0)
    return "never";
  auto s = (now_ms - then_ms) / 1000;
  if (s <= 0)
    return "just now";
  return duration(s) + " ago";
}

std::string percent(double part, double whole) {
  if (whole <= 0 || part <= 0)
    return "0 %";
  auto p = 100.0 * part / whole;
  if (p < 0.1)
    return "<0.1 %";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %%", p);
  return buf;
}

std::string date(std::int64_t unix_ms) {
  auto t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string expiry(std::int64_t expires_ms, std::int64_t now_ms) {
  if (expires_ms == 0)
    return "unknown";
  auto left = (expires_ms - now_ms) / 1000;
  if (left <= 0)
    return "EXPIRED " + duration(-left) + " ago (" + date(expires_ms) + ")";
  return "in " + duration(left) + " (" + date(expires_ms) + ")";
}

std::string_view refusal_hint(std::string_view reason) {
  if (reason == "wrong_key")
    return "wrong PSK? the lock's key must be the content of its psk_file";
  if (reason == "max_sessions")
    return "no room: coap.max_sessions locks were served already";
  if (reason == "forged")
    return "did not authenticate: wrong key, or not the lock";
  if (reason == "replayed")
    return "replayed message: an old recording, or the lock's counter was reset";
  if (reason == "bad_message")
    return "malformed message: lock firmware and gateway protocol versions?";
  return "see the log";
}

} // namespace lockbridge::human
