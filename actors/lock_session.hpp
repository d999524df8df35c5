#pragma once

#include <memory>
#include <string>

#include <caf/error.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "store/pseudonyms.hpp"

namespace lockbridge {

struct lock_session_config {
  std::string lock_id;
  std::shared_ptr<const store::pseudonym_source> pseudonyms;
};

caf::error validate(const lock_session_config& cfg);

struct lock_session_state {
  static inline const char* name = "lock_session";

  lock_session_config cfg;
  journal_actor journal;
  std::uint64_t batches = 0;

  /// Stamps arrival, replaces every credential identifier by its pseudonym and
  /// drops the raw batch: what leaves here holds no identifier in the clear.
  store::append_request pseudonymise(const protocol::event_batch& batch) const;
};

lock_session_actor::behavior_type
lock_session(lock_session_actor::stateful_pointer<lock_session_state> self,
             lock_session_config cfg, journal_actor journal);

} // namespace lockbridge
