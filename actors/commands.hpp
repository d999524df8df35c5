#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <caf/error.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "protocols/lock_commands.hpp"
#include "store/vault.hpp"

namespace lockbridge {

struct commands_config {
  std::shared_ptr<store::vault> vault;            ///< replay ids and the audit trail
  std::shared_ptr<transport::lock_transport> server; ///< to reach the locks (any transport)
  std::function<bool(const std::string&)> is_lock; ///< configured now?
  result_sink publish_result; ///< each cmd_result, kept in the outbox first
  std::string site;
  std::string gateway;
};

caf::error validate(const commands_config& cfg);

struct commands_state {
  static inline const char* name = "commands";

  commands_config cfg;
  std::map<std::string, protocol::lock_command> in_flight; ///< by command id

  void on_command(commands_actor::pointer self, const std::string& payload);
  void on_done(const lock_command_done& done);
  /// At start: every command accepted before a stop and not answered is
  /// sent again if it has not expired, otherwise answered `failed`.
  void resume(commands_actor::pointer self);
  /// Sends an accepted command to its lock; its outcome comes back as atom::result.
  void send(commands_actor::pointer self, const protocol::lock_command& c,
            std::vector<std::uint8_t> request);
  /// Records the result of command `id` and marks it answered, in one
  /// transaction, then has it published.
  void answer(const protocol::command_result& r, const std::string& id);
};

/// Detached: recording a command id is a durable LMDB write.
commands_actor::behavior_type commands(commands_actor::stateful_pointer<commands_state> self,
                                       commands_config cfg);

} // namespace lockbridge
