#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <caf/error.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "store/journal.hpp"

namespace lockbridge {

/// How the journal answers a lock once its batch is durable (or refused).
using append_reply_sink = std::function<void(std::uint64_t request, const store::append_outcome&)>;

struct journal_config {
  std::shared_ptr<store::journal> store;
  append_reply_sink reply;
  std::uint32_t retention_days = 90;
  std::chrono::seconds purge_interval{3600};
  /// Called with the number of events retention purged (the audit trail).
  std::function<void(std::uint64_t)> on_purged;
};

caf::error validate(const journal_config& cfg);

struct journal_state {
  static inline const char* name = "journal";

  journal_config cfg;
  uplink_actor uplink;
  std::vector<std::uint64_t> request_ids;
  std::vector<store::append_request> batches;
  std::uint64_t remove_upto = 0;
  bool flush_scheduled = false;
  journal_figures counters; ///< only the since-start counters are used

  /// Commits everything gathered in one durable transaction and answers.
  /// Returns the next key if anything was stored, 0 otherwise.
  std::uint64_t flush();
  void purge();
};

/// Spawned detached: its commits block on fdatasync and must not hold up the
/// scheduler's workers.
journal_actor::behavior_type journal(journal_actor::stateful_pointer<journal_state> self,
                                     journal_config cfg, uplink_actor uplink);

} // namespace lockbridge
