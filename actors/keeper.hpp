#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <caf/error.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "store/vault.hpp"

namespace lockbridge {

struct keeper_config {
  std::shared_ptr<store::vault> vault;
  result_sink publish_result; ///< each cmd_result, kept in the outbox first
  std::string site;
  std::string gateway;
  std::uint32_t retention_days = 90;
  std::uint32_t epoch_days = 30;
  std::chrono::seconds tick_interval{3600};
  std::size_t reseal_batch = 500; ///< values re-sealed per transaction
};

caf::error validate(const keeper_config& cfg);

struct keeper_state {
  static inline const char* name = "keeper";

  keeper_config cfg;
  /// Re-sealing after a data-key rotation: which table, and where it is.
  struct reseal_progress {
    int table = 0; ///< 0 journal, 1 credentials, 2 audit, 3 epochs, 4 done
    std::uint64_t next_key = 0;
    std::optional<store::credential_store::lookup_key> next_credential;
    std::uint32_t new_key = 0;
    std::string command_id; ///< answered when done (empty: not from a command)
    std::chrono::steady_clock::time_point started;
  };
  std::optional<reseal_progress> reseal;

  void tick();
  /// Each returns its result's JSON, also handed to publish_result.
  std::string erase_subject(const std::string& payload);
  std::string rotate_keys(const std::string& payload);
  std::string answer(const protocol::command_result& r);
  /// A command that does not decode: its error result (id if it has one).
  std::string refuse(protocol::command_result& r, const std::string& payload,
                     const input_error& error);
  /// One batch of re-sealing; true while more remains.
  bool reseal_step();
};

/// Spawned detached: erasure and re-sealing write to LMDB.
keeper_actor::behavior_type keeper(keeper_actor::stateful_pointer<keeper_state> self,
                                   keeper_config cfg);

} // namespace lockbridge
