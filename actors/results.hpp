#pragma once
// Where a cmd_result goes before it is published: the sealed outbox
// (store/outbox.hpp), so that a restart while the cloud is away loses none.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "protocols/credentials.hpp"
#include "store/vault.hpp"

namespace lockbridge {

/// Keeps the cmd_result `payload` in the outbox; with `command_id`, also
/// marks that lock command answered in the same transaction. Returns its
/// outbox number, or 0 when the disk refused it: the failure is logged
/// (naming `owner`), a storage fault is recorded in `v.storage` (status),
/// and the caller publishes the result from memory.
std::uint64_t keep_result(store::vault& v, std::string_view owner, std::string_view payload,
                          std::string_view command_id = {});

/// A command result on its way to the cloud, as the actor that produced it
/// hands it to the uplink: typed, so that nothing reads the JSON again to
/// learn which command it answers.
struct command_reply {
  std::uint64_t number = 0; ///< in the outbox; 0: the disk refused it (sent from `payload`)
  std::string id;           ///< the command's id ("" when it had none)
  bool final = true;        ///< false for "pending": another result of the command follows
  std::string payload;      ///< the cmd_result JSON
};
using command_reply_ptr = std::shared_ptr<const command_reply>;

/// Where a command handler hands its results (the uplink, through the
/// supervisor, in the daemon; a recorder in the actor tests).
using result_sink = std::function<void(command_reply_ptr)>;

/// Encodes `r` as this gateway's cmd_result and keeps it as keep_result
/// does (with `answers`, that lock command is marked answered in the same
/// transaction). Never throws for the disk: a refusal (or no vault) gives
/// number 0.
command_reply_ptr keep_reply(store::vault* v, std::string_view owner, const std::string& site,
                             const std::string& gateway, const protocol::command_result& r,
                             std::string_view answers = {});

} // namespace lockbridge
