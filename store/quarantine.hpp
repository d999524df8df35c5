#pragma once

#include <cstdint>

#include "store/environment.hpp"

namespace lockbridge::store {

/// Values that failed to open (altered, moved between keys or tables, or
/// sealed by a destroyed data key) are moved here rather than used or
/// silently dropped: still sealed, with their table, key and the time. They
/// are counted and reported in status, audited by whoever moved them, and
/// purged by retention like everything else.
struct quarantine_figures {
  std::uint64_t count = 0;
  std::int64_t oldest_at = 0; ///< Unix ms, 0 if empty
};

quarantine_figures quarantine_stats(environment& env);

/// Removes quarantined values moved there before `cutoff_ms`. Returns how many.
std::uint64_t purge_quarantine_before(environment& env, std::int64_t cutoff_ms);

} // namespace lockbridge::store
