#include "transports/ble_link_state.hpp"

namespace lockbridge::transport {

std::string_view to_string(ble_phase p) {
  switch (p) {
  case ble_phase::idle: return "idle";
  case ble_phase::connecting: return "connecting";
  case ble_phase::resolving: return "resolving services";
  case ble_phase::handshaking: return "handshaking";
  case ble_phase::ready: return "ready";
  }
  return "?";
}

namespace {

/// A ready link: release it when its exchange is over, when it is stuck, or
/// when it has been held long enough while others wait (never in the middle
/// of a message or with events the journal has not answered).
ble_step ready_step(const ble_link_view& l, const ble_link_limits& limits, bool others_wait,
                    ble_link_view::time_point now) {
  bool quiet = now - l.last_activity > limits.idle_release;
  // (A lock that never answers the state request is released when quiet.)
  bool outstanding = l.events_in_flight || l.commands_waiting || l.assembling
                     || (l.state_pending && !quiet);
  if (!outstanding && (l.lock_idle || quiet))
    return l.lock_idle ? ble_step::release_done : ble_step::release_quiet;
  if (now - l.last_activity > ble_stuck_after)
    return ble_step::release_stuck;
  if (others_wait && now - l.connected_at > limits.max_hold && !l.events_in_flight
      && !l.assembling)
    return ble_step::release_yield;
  return ble_step::none;
}

} // namespace

ble_step next_step(const ble_link_view& l, const ble_link_limits& limits, bool others_wait,
                   ble_link_view::time_point now) {
  switch (l.at) {
  case ble_phase::idle:
  case ble_phase::connecting: // BlueZ's Connect has its own timeout
    return ble_step::none;
  case ble_phase::resolving:
    if (now - l.phase_since > limits.connect_timeout)
      return ble_step::fail_resolving;
    return now - l.last_resolve > ble_resolve_retry ? ble_step::resolve_again : ble_step::none;
  case ble_phase::handshaking:
    return now - l.phase_since > limits.connect_timeout ? ble_step::fail_handshake
                                                         : ble_step::none;
  case ble_phase::ready:
    return ready_step(l, limits, others_wait, now);
  }
  return ble_step::none;
}

} // namespace lockbridge::transport
