#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "store/audit.hpp"
#include "store/commands.hpp"
#include "store/credentials.hpp"
#include "store/environment.hpp"
#include "store/epochs.hpp"
#include "store/journal.hpp"
#include "store/outbox.hpp"
#include "store/pseudonyms.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

/// Whether the disk takes writes: set by the writer that met a storage
/// fault (ENOSPC, EIO, LMDB's map full), cleared by the next write that
/// succeeds. Shown in status; the locks meanwhile get 5.03 for events.
class storage_health {
public:
  struct snapshot {
    bool ok = true;
    std::string error;           ///< the last fault, while not ok
    std::int64_t since = 0;      ///< Unix ms the fault began (0 when ok)
    std::uint64_t faults = 0;    ///< failed commits since start
  };
  /// Records a failed write; returns true if the store was healthy before.
  bool fail(const std::string& what, std::int64_t now_ms) {
    std::lock_guard guard{mutex_};
    ++s_.faults;
    bool was_ok = s_.ok;
    s_.ok = false;
    healthy_ = false;
    s_.error = what;
    if (was_ok)
      s_.since = now_ms;
    return was_ok;
  }
  /// Records a successful write; returns true if the store was failing before.
  bool recovered() {
    if (healthy_.load(std::memory_order_relaxed))
      return false;
    std::lock_guard guard{mutex_};
    bool was_failing = !s_.ok;
    s_.ok = true;
    s_.error.clear();
    s_.since = 0;
    healthy_ = true;
    return was_failing;
  }
  [[nodiscard]] snapshot get() const {
    std::lock_guard guard{mutex_};
    return s_;
  }
private:
  mutable std::mutex mutex_;
  snapshot s_;
  std::atomic<bool> healthy_{true};
};

/// Everything the gateway keeps at rest, opened together: the sealed tables,
/// the keys that seal them, the pseudonym epochs and the audit trail, plus
/// counters of what data protection did since start (status).
struct vault {
  std::shared_ptr<environment> env;
  std::shared_ptr<keyring> keys;
  std::shared_ptr<journal> events;
  std::shared_ptr<credential_store> credentials;
  std::shared_ptr<epoch_store> epochs;
  std::shared_ptr<pseudonym_source> pseudonyms;
  std::shared_ptr<audit_log> audit;
  std::shared_ptr<command_ids> commands;
  std::shared_ptr<outbox> results; ///< cmd_result messages until the broker acknowledges them

  std::atomic<std::uint64_t> quarantined{0};       ///< values moved to quarantine
  std::atomic<std::uint64_t> audit_purged{0};      ///< audit records purged by retention
  std::atomic<std::uint64_t> quarantine_purged{0}; ///< quarantined values purged by retention
  std::atomic<std::uint64_t> epochs_destroyed{0};
  std::atomic<std::uint64_t> erasures{0};
  std::atomic<bool> resealing{false};              ///< a data-key rotation is re-sealing
  storage_health storage;                          ///< disk faults (status)
};

/// The key material a vault is opened with.
struct vault_keys {
  key256 kek{};
  std::optional<key256> previous_kek;
  key256 lookup{};
};

/// Whose state a daemon opens: checked against the identity the state
/// records (store/state_check.hpp), and recorded where it is missing.
struct state_owner {
  std::string site;
  std::string gateway;
  bool start_empty = false; ///< a recorded state whose data file is gone may start empty
};

/// Opens (creating if needed) the state in `dir`. With an `owner` (the
/// daemon), the state must be that gateway's. Throws store_error.
std::shared_ptr<vault> open_vault(const std::filesystem::path& dir, std::uint64_t journal_max_bytes,
                                  const vault_keys& keys, std::int64_t now_ms,
                                  bool exclusive = true,
                                  const std::optional<state_owner>& owner = std::nullopt);

/// Appends a record to the vault's audit trail at the current time; never
/// throws: a failure is logged and the action it records goes on (an audit
/// trail that cannot be written must not stop a door or a command). Every
/// layer that acts records through this one function.
void audit(vault& v, std::string_view action, nlohmann::json detail);

} // namespace lockbridge::store
