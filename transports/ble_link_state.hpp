#pragma once
// A BLE link's life, the part with no D-Bus in it: the phases a connection
// goes through, and what the BLE loop's tick must do with a link given its
// phase, its clocks and the work it still carries (fail a phase that took
// too long, look for the lock's services again, release a connection whose
// exchange is over, that stalled, or that was held long enough while other
// locks wait). The transport acts on the verdict (D-Bus calls, logs, the
// radio scheduler's demand). Unit-tested alone
// (tests/transports/ble_link_state_test.cpp).

#include <chrono>
#include <string_view>

namespace lockbridge::transport {

enum class ble_phase { idle, connecting, resolving, handshaking, ready };

std::string_view to_string(ble_phase p);

/// What the tick does with one link.
enum class ble_step {
  none,
  fail_resolving, ///< the lock's GATT service was not found in time
  fail_handshake, ///< the lock did not answer the hello in time
  resolve_again,  ///< look for the services again (ServicesResolved may have been missed)
  release_done,   ///< the lock said it has nothing more to say
  release_quiet,  ///< nothing moved for idle_release_ms, nothing outstanding
  release_stuck,  ///< work outstanding but nothing moved for 30 s: both sides start again
  release_yield,  ///< held max_hold_ms while other locks wait; it comes back in turn
};

/// A link as the tick sees it.
struct ble_link_view {
  using time_point = std::chrono::steady_clock::time_point;
  ble_phase at = ble_phase::idle;
  time_point phase_since{};   ///< when it entered `at`
  time_point connected_at{};  ///< when the connect started
  time_point last_activity{}; ///< the lock's last message
  time_point last_resolve{};  ///< the last look for its services
  bool events_in_flight = false; ///< events of the lock wait for the journal
  bool commands_waiting = false; ///< commands wait to go or for their answer
  bool assembling = false;       ///< a message's fragments are arriving
  bool state_pending = false;    ///< the lock's state was asked for, not answered
  bool lock_idle = false;        ///< the lock said it has nothing more to say
};

/// ble.connect_timeout_ms, ble.idle_release_ms, ble.max_hold_ms.
struct ble_link_limits {
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds idle_release{2000};
  std::chrono::milliseconds max_hold{5000};
};

/// After this long without any progress on a ready link, it is released.
inline constexpr std::chrono::seconds ble_stuck_after{30};
/// How often a link still resolving looks for the lock's services again.
inline constexpr std::chrono::milliseconds ble_resolve_retry{500};

/// What the tick at `now` does with `link`; `others_wait`: an idle lock
/// wants the radio (an access query, commands, advertised events).
ble_step next_step(const ble_link_view& link, const ble_link_limits& limits, bool others_wait,
                   ble_link_view::time_point now);

} // namespace lockbridge::transport
