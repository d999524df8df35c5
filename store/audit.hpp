#pragma once

#include <cstdint>
#include <memory>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/environment.hpp"
#include "store/sealed_table.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

/// One audit record: its canonical JSON (sorted keys, compact), exactly the
/// bytes its hash covers, and that hash (hex).
struct audit_entry {
  std::uint64_t seq = 0;
  std::string json;
  std::string hash;
};

struct audit_figures {
  std::uint64_t count = 0;    ///< records held (not yet acknowledged by the broker)
  std::uint64_t next_seq = 1; ///< the seq the next record gets
  std::int64_t oldest_at = 0; ///< Unix ms, 0 if none
};

/// What `verify` found.
struct audit_verdict {
  bool ok = true;
  std::uint64_t records = 0;    ///< records checked
  std::uint64_t first_seq = 0;  ///< first record held (after those already delivered)
  std::uint64_t broken_at = 0;  ///< seq of the first broken link (0 if none)
  std::string reason;           ///< what is wrong there
};

/// The tamper-evident audit trail: every state-changing action appends a
/// record `{seq, at, action, detail, prev}` whose `prev` is the SHA-256 of
/// the previous record's canonical JSON, sealed in the `audit` table. Records
/// leave only when the broker acknowledged them (or retention removes them);
/// the hash and seq of the last one removed anchor the rest, so the chain
/// still verifies. Thread-safe: any actor may append.
class audit_log final : public sealed_log {
public:
  audit_log(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys);

  /// Appends a record in its own durable transaction. `detail` must hold no
  /// personal data (subjects appear only as pseudonyms). Returns its seq.
  std::uint64_t append(std::int64_t now_ms, std::string_view action, nlohmann::json detail);

  /// Up to `max` records from `from`; seqs that fail to open are reported in
  /// `damaged` and skipped.
  std::vector<audit_entry> read(std::uint64_t from, std::size_t max,
                                std::vector<std::uint64_t>* damaged = nullptr) const;

  /// The broker acknowledged every record up to `seq`: remove them.
  void remove_upto(std::uint64_t seq);
  /// Removes records older than `cutoff_ms` even if undelivered. Returns how many.
  std::uint64_t purge_before(std::int64_t cutoff_ms);

  /// Walks the chain from the anchor to the head.
  [[nodiscard]] audit_verdict verify() const;
  [[nodiscard]] audit_figures figures() const;

private:
  /// Removes records from the front while `keep_going(record json)` holds.
  using front_predicate =
    std::function<bool(std::uint64_t seq, const std::optional<std::string>& record)>;
  std::uint64_t remove_front(const front_predicate& keep_going);
};

/// SHA-256 of `bytes`, hex.
std::string sha256_hex(std::string_view bytes);

} // namespace lockbridge::store
