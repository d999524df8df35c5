#pragma once

#include <cstdint>

#include <caf/error.hpp>

namespace lockbridge {

/// lockbridge's error codes, carried in caf::error with category "lockbridge".
enum class ec : std::uint8_t {
  unspecified = 1,
  store_failure,    ///< LMDB reported an error other than fullness
  config_invalid,   ///< a config value was refused
  listen_failed,    ///< a listener could not bind
  tls_failure,      ///< the MQTT TLS setup failed (files unreadable, mismatched)
  restarting,       ///< the supervisor is restarting its children
  state_damaged,    ///< the state is damaged or foreign: fatal (exit 65), never restarted over
  storage_fault,    ///< the disk is full or failing: ridden out, never a reason to restart
  storage_panic,    ///< LMDB gave up on the environment: only a new process can reopen it
};

} // namespace lockbridge

CAF_ERROR_CODE_ENUM(lockbridge::ec, "lockbridge")
