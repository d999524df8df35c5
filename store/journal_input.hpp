#pragma once
// What a lock said, made fit for the journal where it was decoded (on the
// transport's thread): stamped with its arrival and with every credential
// identifier replaced by its pseudonym. What these return holds no
// identifier in the clear; the raw batch is dropped by the caller.

#include <cstdint>
#include <string>

#include "protocols/credentials.hpp"
#include "protocols/lock_messages.hpp"
#include "store/journal.hpp"
#include "store/pseudonyms.hpp"

namespace lockbridge::store {

/// A lock's batch of events, received at `now_ms` (Unix ms).
append_request journal_batch(const std::string& lock, const protocol::event_batch& batch,
                             const pseudonym_source& pseudonyms, std::int64_t now_ms);

/// The gateway's own event for an access decision: stream "{lock}.access",
/// numbered by the journal (assign_seq), decided at `decided_at` (Unix ms).
append_request journal_decision(const std::string& lock, const protocol::access_request& request,
                                const protocol::access_decision& decision,
                                std::int64_t decided_at, const pseudonym_source& pseudonyms);

} // namespace lockbridge::store
