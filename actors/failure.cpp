#include "actors/failure.hpp"

#include <caf/scheduled_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "store/environment.hpp"

namespace lockbridge {

failure_kind kind_of(const std::exception& e) {
  if (auto s = dynamic_cast<const store::store_error*>(&e)) {
    switch (s->why()) {
    case store::store_error::kind::damaged:
    case store::store_error::kind::foreign: return failure_kind::state;
    case store::store_error::kind::in_use:
    case store::store_error::kind::unusable: return failure_kind::environment;
    default: return failure_kind::runtime;
    }
  }
  if (dynamic_cast<const environment_error*>(&e) != nullptr)
    return failure_kind::environment;
  if (dynamic_cast<const configuration_error*>(&e) != nullptr)
    return failure_kind::configuration;
  return failure_kind::runtime;
}

caf::error actor_failure(std::string_view actor, std::exception_ptr& x) {
  try {
    std::rethrow_exception(x);
  } catch (const store::store_error& e) {
    spdlog::error("{}: failed: {}", actor, e.what());
    switch (e.why()) {
    case store::store_error::kind::damaged:
    case store::store_error::kind::foreign:
      return caf::make_error(ec::state_damaged, e.what());
    case store::store_error::kind::panic: return caf::make_error(ec::storage_panic, e.what());
    case store::store_error::kind::storage: return caf::make_error(ec::storage_fault, e.what());
    default: return caf::make_error(ec::store_failure, e.what());
    }
  } catch (const std::exception& e) {
    spdlog::error("{}: failed: {}", actor, e.what());
    return caf::make_error(ec::unexpected, e.what());
  } catch (...) {
    spdlog::error("{}: failed with an exception of unknown type", actor);
    return caf::make_error(ec::unexpected, "an exception of unknown type");
  }
}

caf::error actor_failure_of(caf::scheduled_actor* a, std::exception_ptr& x) {
  return actor_failure(a->name(), x);
}

} // namespace lockbridge
