#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include <caf/error.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "store/journal.hpp"
#include "store/vault.hpp"

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
  /// Where a storage fault (disk full, I/O error) is recorded for status.
  std::shared_ptr<store::storage_health> health;
  /// The audit trail and the results outbox, whose acknowledged records
  /// this actor removes (atom::remove with atom::audit or atom::result).
  std::shared_ptr<store::audit_log> audit;
  std::shared_ptr<store::outbox> results;
  /// Optional: where quarantined values are counted and audit records go
  /// (atom::quarantine, atom::audit); without it they are only moved.
  std::shared_ptr<store::vault> vault;
};

caf::error validate(const journal_config& cfg);

struct journal_state {
  static inline const char* name = "journal";

  journal_config cfg;
  /// Readers waiting for entries at a key or later (atom::committed), with
  /// that key; answered by the commit that stores them.
  std::vector<std::pair<std::uint64_t, caf::typed_response_promise<std::uint64_t>>> readers;
  std::vector<std::uint64_t> request_ids;
  std::vector<store::append_request> batches;
  /// The gateway's own events (access decisions, request id 0) that a full
  /// journal or a failing disk refused: no lock resends them, so they are
  /// held here and appended first at the next commit (at most
  /// `max_held`; beyond that, counted and logged as lost).
  std::deque<store::append_request> held;
  static constexpr std::size_t max_held = 10000;
  std::uint64_t held_dropped = 0;
  bool holding = false; ///< said once per episode that decisions are held
  std::chrono::steady_clock::time_point fault_logged_at{};
  bool fault_logged = false; ///< a storage fault was logged and its end not yet
  std::uint64_t remove_upto = 0;
  std::uint64_t audit_remove_upto = 0;          ///< acknowledged audit records
  std::vector<std::uint64_t> results_delivered; ///< acknowledged results (outbox numbers)
  bool flush_scheduled = false;
  /// While the disk refuses writes: the delay before removals are tried
  /// again (doubling to 30 s); zero while healthy.
  std::chrono::milliseconds retry_delay{0};
  bool retry_scheduled = false;
  journal_figures counters; ///< only the since-start counters are used

  /// Commits everything gathered in one durable transaction and answers.
  /// Returns the next key if anything was stored, 0 otherwise. A storage
  /// fault (ENOSPC, EIO) answers every batch of the group "full" (5.03:
  /// nothing is acknowledged that is not durable) and is recorded, not thrown.
  std::uint64_t flush();
  void purge();
  /// Moves journal entries (`outbox` false) or outbox results that do not
  /// open to quarantine, counts and audits it; a failure is logged.
  void quarantine(bool outbox, const std::vector<std::uint64_t>& keys);
  /// Appends an audit record for another actor; a failure is logged.
  void record(const std::string& action, const std::string& detail_json);
  /// Removes the acknowledged audit records and results, each table in its
  /// own transaction. A storage fault keeps them for the next try; another
  /// failure is logged and gives them up (they are sent again: delivery is
  /// at least once). False when a storage fault kept them.
  bool remove_delivered();
  /// Doubles the delay before removals are tried again (500 ms to 30 s).
  void back_off();
  /// Whether removals wait (for the next flush or its retry).
  [[nodiscard]] bool removals_wait() const {
    return remove_upto > 0 || audit_remove_upto > 0 || !results_delivered.empty();
  }
  /// Answers the gathered batches "full" after a failed commit and records the fault.
  void storage_fault(const std::string& what);
  /// Keeps a refused gateway event for the next commit (bounded).
  void hold(store::append_request&& batch);
};

/// Spawned detached: its commits block on fdatasync and must not hold up the
/// scheduler's workers.
journal_actor::behavior_type journal(journal_actor::stateful_pointer<journal_state> self,
                                     journal_config cfg);

} // namespace lockbridge
