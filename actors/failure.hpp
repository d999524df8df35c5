#pragma once
// How the gateway's failures are classified and reported: what a start
// failure or a fatal error means for the process (its exit code, in app/),
// and the exception handler every actor installs so that no exception is
// printed by CAF ("*** unhandled exception") or silently restarts everything.

#include <exception>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/fwd.hpp>

namespace lockbridge {

/// What kind of failure ended (or refused) the gateway; app/ maps each to a
/// documented exit code (docs/operations.md, "When things fail").
enum class failure_kind {
  configuration, ///< the config or a file it names is wrong (78)
  state,         ///< the state is damaged or not this gateway's (65)
  environment,   ///< a port or the state is held by another process, a directory unusable (69)
  runtime,       ///< anything else, after or during start (1)
};

/// The kind of the exception `e` (store errors by their kind; a listener
/// that cannot bind is the environment; anything else is runtime).
failure_kind kind_of(const std::exception& e);

/// Thrown where a listener or socket cannot be set up (the environment's fault).
class environment_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Thrown where a secret or file the config names cannot be used.
class configuration_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// The error an actor ends with when a handler throws: logged once (naming
/// the actor), and carrying ec::state_damaged or ec::storage_fault where the
/// exception says so, so the supervisor can tell a damaged state (fatal)
/// from a failure a restart may cure.
caf::error actor_failure(std::string_view actor, std::exception_ptr& x);

/// actor_failure for the actor `a` (its name).
caf::error actor_failure_of(caf::scheduled_actor* a, std::exception_ptr& x);

/// Installs actor_failure as `self`'s exception handler.
template <class Self>
void log_exceptions(Self* self) {
  self->set_exception_handler(&actor_failure_of);
}

} // namespace lockbridge
