#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "store/audit.hpp"
#include "store/commands.hpp"
#include "store/credentials.hpp"
#include "store/environment.hpp"
#include "store/epochs.hpp"
#include "store/journal.hpp"
#include "store/pseudonyms.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

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

  std::atomic<std::uint64_t> quarantined{0};       ///< values moved to quarantine
  std::atomic<std::uint64_t> audit_purged{0};      ///< audit records purged by retention
  std::atomic<std::uint64_t> quarantine_purged{0}; ///< quarantined values purged by retention
  std::atomic<std::uint64_t> epochs_destroyed{0};
  std::atomic<std::uint64_t> erasures{0};
  std::atomic<bool> resealing{false};              ///< a data-key rotation is re-sealing
};

/// The key material a vault is opened with.
struct vault_keys {
  key256 kek{};
  std::optional<key256> previous_kek;
  key256 lookup{};
};

/// Opens (creating if needed) the state in `dir`. Throws store_error.
std::shared_ptr<vault> open_vault(const std::filesystem::path& dir, std::uint64_t journal_max_bytes,
                                  const vault_keys& keys, std::int64_t now_ms,
                                  bool exclusive = true);

} // namespace lockbridge::store
