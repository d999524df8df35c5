#pragma once

#include <cstdint>

#include <caf/error.hpp>

namespace lockbridge {

/// lockbridge's error codes, carried in caf::error with category "lockbridge":
/// what crosses an actor boundary (docs/design.md, "Errors, one style per
/// layer"). Every code is produced somewhere; a code nothing produces is
/// removed, not kept for later.
enum class ec : std::uint8_t {
  unexpected = 1,   ///< an actor ended on an exception of no known kind (a defect)
  store_failure,    ///< LMDB reported an error of no kind below (an actor ended on it)
  config_invalid,   ///< an actor's configuration is incomplete or out of range (validate())
  command_refused,  ///< a request the receiver does not take (named in the message)
  restarting,       ///< the supervisor is restarting its children, or did not start
  state_damaged,    ///< the state is damaged or foreign: fatal (exit 65), never restarted over
  storage_fault,    ///< the disk is full or failing: ridden out, never a reason to restart
  storage_panic,    ///< LMDB gave up on the environment: only a new process can reopen it
};

} // namespace lockbridge

CAF_ERROR_CODE_ENUM(lockbridge::ec, "lockbridge")
