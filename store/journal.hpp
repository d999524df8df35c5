#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <cstdint>
#include <memory>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "protocols/cloud_messages.hpp"
#include "store/environment.hpp"
#include "store/sealed_table.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

class txn; // store/lmdb_detail.hpp

/// Bounds of the journal (from config).
struct journal_limits {
  std::uint64_t max_bytes = 512ull << 20; ///< refuse new events beyond this
};

/// One lock's events to append; all have `lock` equal to `lock_id` and rising seq.
struct append_request {
  std::string lock_id;
  std::vector<protocol::journal_record> records;
  /// The gateway's own events (access decisions, under the stream
  /// "{lock}.access"): the store numbers them after the stream's progress,
  /// ignoring the records' seq, inside the commit's transaction.
  bool assign_seq = false;
};

/// What happened to one append_request in a group commit.
struct append_outcome {
  enum class status { stored, refused_full };
  status result = status::stored;
  std::uint64_t acked_seq = 0;   ///< highest seq of this lock now durable
  std::uint32_t stored = 0;      ///< events newly written
  std::uint32_t duplicates = 0;  ///< events already durable, acknowledged again
};

/// A journalled event with its key.
struct journal_entry {
  std::uint64_t key = 0;
  protocol::journal_record record;
};

/// Recounts the journal's figures (entries, bytes, next key) from its
/// entries, for a state put together by `lockbridge state salvage`.
void recount_journal(environment& env);

/// The outbox of lock events: an append-only sequence keyed by big-endian u64,
/// drained in order, with per-lock progress so a repeated seq is acknowledged
/// again but never stored twice. One writer (the journal actor) calls the
/// mutating members; `read` and `figures` may be called from any thread.
class journal final : public sealed_log {
public:
  /// Keeps `owner` (the environment's owner) alive as long as this object:
  /// actors that outlive their supervisor's state still have a valid store.
  /// Values are sealed with `keys` (store/sealing.hpp).
  journal(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys, journal_limits limits);

  /// Appends several locks' batches in one durable transaction (group commit).
  /// Events whose seq is not above the lock's progress are counted as
  /// duplicates. A batch that would take the journal past its bound is refused
  /// whole; others in the group still commit. Also removes entries up to
  /// `remove_upto` (acknowledged by the broker) in the same transaction.
  std::vector<append_outcome> append(std::span<const append_request> batches,
                                     std::uint64_t remove_upto = 0);

  /// Removes every entry with key <= `key` (the broker acknowledged them).
  void remove_upto(std::uint64_t key);

  /// Up to `max` entries with key >= `from`, in key order. Values that fail
  /// to open or decode are reported via `damaged` (their keys) and skipped,
  /// never returned.
  std::vector<journal_entry> read(std::uint64_t from, std::size_t max,
                                  std::vector<std::uint64_t>* damaged = nullptr) const;

  /// Removes entries received before `cutoff_ms`, oldest first, even if not
  /// delivered. Returns how many were removed.
  std::uint64_t purge_received_before(std::int64_t cutoff_ms);

  /// Moves the entries under `keys` that still fail to open into the
  /// quarantine table, and counts them out of the journal's figures.
  /// Returns how many were moved.
  std::uint64_t quarantine(std::span<const std::uint64_t> keys) override;

  /// Removes every entry whose record satisfies `match` (erasure of a
  /// subject). Entries that fail to open are left to quarantine. Returns how
  /// many were removed.
  std::uint64_t erase_matching(const std::function<bool(const protocol::journal_record&)>& match);

  /// Events waiting per lock (a lock's access decisions, stream
  /// "{lock}.access", count as its own), from the oldest entry on, at most
  /// `max` entries read: `complete` says whether the whole journal was.
  struct pending_count {
    std::map<std::string, std::uint64_t, std::less<>> by_lock;
    std::uint64_t read = 0;
    bool complete = true;
  };
  [[nodiscard]] pending_count pending_by_lock(std::size_t max) const;

  /// The highest durable seq of `lock`, 0 if none.
  [[nodiscard]] std::uint64_t progress(const std::string& lock) const;

  /// Depth, bytes, bound and oldest arrival (counters since start are the
  /// caller's).
  [[nodiscard]] protocol::journal_figures figures() const;

  /// Key of the next entry to be appended.
  [[nodiscard]] std::uint64_t next_key() const noexcept { return next_key_; }

private:
  /// Saves the figures after `removed` entries (`freed` bytes) left, and
  /// commits `t`.
  void commit_removal(txn& t, std::uint64_t removed, std::uint64_t freed);

  /// An entry decodes as a journal record.
  [[nodiscard]] bool decodes(std::span<const std::uint8_t> plain) const override;

  journal_limits limits_;
  // Writers (the journal actor, erasure, re-sealing) take turns (writer_):
  // the cached figures below are read-modify-written by each.
  // Written by the single writer, read by anyone (figures).
  std::atomic<std::uint64_t> next_key_ = 1;
  std::atomic<std::uint64_t> count_ = 0;
  std::atomic<std::uint64_t> bytes_ = 0;
  std::map<std::string, std::uint64_t, std::less<>> progress_;
};

} // namespace lockbridge::store
