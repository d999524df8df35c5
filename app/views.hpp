#pragma once

// How `lockbridge status` and `lockbridge locks` print the daemon's status
// document for a person (the `--json` forms print the document itself).

#include <ostream>

#include <nlohmann/json.hpp>

namespace lockbridge::views {

/// The whole status: identity, broker, TLS files, storage, journal, events,
/// credentials, keys, then the lock table.
void print_status(const nlohmann::json& doc, std::ostream& out);

/// One row per configured lock (id, transport, available, last seen, events
/// waiting, last refusal with its hint), then identities no lock has.
void print_locks(const nlohmann::json& doc, std::ostream& out);

} // namespace lockbridge::views
