#pragma once
// The figures of the uplink's status (the retained status message and the
// box's own `lockbridge status`), from the uplink's state. Internal to the
// uplink (actors/uplink.cpp, actors/uplink_status.cpp).

#include <chrono>

#include <nlohmann/json.hpp>

#include "actors/uplink.hpp"

namespace lockbridge {

/// The status without the journal's figures (they come from its actor).
protocol::gateway_status status_now(const uplink_state& st);

/// Fills the health figures (`now_steady`: the uplink's clock, for the
/// worker's stall); samples the rates at most once a second.
void add_health(uplink_state& st, protocol::gateway_status& s, const journal_figures& f,
                std::chrono::steady_clock::time_point now_steady);

/// What only the box's own status shows (not the MQTT status, which every
/// subscriber receives each interval): the lock table with each lock's
/// availability, the strangers, the decisions by reason and the TLS files'
/// ends.
void add_local_detail(const uplink_state& st, nlohmann::json& doc);

} // namespace lockbridge
