#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/access_service.hpp"
#include "actors/interfaces.hpp"
#include "store/credentials.hpp"

namespace lockbridge {

struct credentials_config {
  std::shared_ptr<store::credential_store> store;
  std::shared_ptr<access_service> access; ///< for the clock's high-water mark
  std::shared_ptr<store::vault> vault;     ///< for the audit trail (optional)
  result_sink publish_result; ///< each cmd_result, kept in the outbox (with a vault)
  std::string site;
  std::string gateway;
  std::chrono::seconds tick_interval{60};
  std::chrono::seconds snapshot_timeout{600}; ///< a snapshot idle this long is dropped
  std::uint64_t max_snapshot_credentials = 2'000'000;
};

caf::error validate(const credentials_config& cfg);

/// A snapshot being received: its chunks are checked as they arrive and kept
/// in memory (lookup keys only, no raw identifier); the set is replaced in one
/// transaction once the last chunk is in.
struct staged_snapshot {
  std::string id;
  std::uint64_t version = 0;
  std::uint32_t chunks = 0;
  std::set<std::uint32_t> received;
  std::vector<std::pair<store::credential_store::lookup_key, protocol::credential>> entries;
  std::set<store::credential_store::lookup_key> keys;
  std::chrono::steady_clock::time_point last_chunk;
};

struct credentials_state {
  static inline const char* name = "credentials";

  credentials_config cfg;
  std::optional<staged_snapshot> staged;

  void on_snapshot_chunk(const std::string& payload);
  /// Whether a chunk may be kept: it belongs to the snapshot being received
  /// or starts one (a newer version than in force); `already_in_force`: the
  /// snapshot's version is the one in force, nothing to do.
  struct admission {
    std::optional<input_error> error;
    bool already_in_force = false;
  };
  admission admit(const protocol::snapshot_chunk& chunk, std::uint64_t in_force);
  /// Keeps a chunk of the snapshot being received, all of it or (a
  /// credential twice) none: the error says which.
  std::optional<input_error> stage(protocol::snapshot_chunk& chunk);
  /// Applies the complete staged snapshot in one transaction; fills the
  /// result, or says why it failed (the old set stays).
  std::optional<input_error> apply_staged(protocol::command_result& r);
  void on_delta(const std::string& payload);
  void reply(protocol::command_result r);
  /// Saves the clock's high-water mark (so a clock set back cannot re-open
  /// expired credentials after a restart either).
  void save_clock();
};

/// Spawned detached: a snapshot of 100,000 credentials is one long write
/// transaction, which must not hold up the scheduler's worker.
credentials_actor::behavior_type
credentials(credentials_actor::stateful_pointer<credentials_state> self, credentials_config cfg);

} // namespace lockbridge
