#pragma once

// Figures as an operator reads them (`lockbridge status`, `locks`, `doctor`):
// sizes in binary units, durations in the two largest units, percentages with
// one decimal, dates in UTC.

#include <cstdint>
#include <string>
#include <string_view>

namespace lockbridge::human {

/// "512 B", "1.5 KiB", "12.0 MiB", "3.2 GiB".
std::string bytes(std::uint64_t n);

/// "45 s", "3 min 12 s", "2 h 5 min", "3 d 4 h" (negative: as its magnitude).
std::string duration(std::int64_t seconds);

/// "never" for 0, "just now", or "3 min 12 s ago" (Unix ms).
std::string ago(std::int64_t then_ms, std::int64_t now_ms);

/// "12.5 %", "<0.1 %" for a part too small to show, "0 %" for none.
std::string percent(double part, double whole);

/// "2026-12-01 04:30 UTC" (Unix ms).
std::string date(std::int64_t unix_ms);

/// "in 364 d (2027-11-30 ...)" or "EXPIRED 3 d ago (...)"; "unknown" for 0.
std::string expiry(std::int64_t expires_ms, std::int64_t now_ms);

/// What a lock's refusal reason most likely means, said as the fix.
std::string_view refusal_hint(std::string_view reason);

} // namespace lockbridge::human
