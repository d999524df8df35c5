#pragma once
// Who gets the BLE radio next. An adapter holds a few connections at once
// (ble.max_connections); locks wait for one because an access query waits
// (urgent), the cloud's commands wait, they advertised events, or their poll
// is due. No D-Bus and no threads here: the BLE transport asks on its loop,
// and tests/transports/ble_scheduler_test.cpp drives it alone.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace lockbridge::transport {

/// What one lock wants of the radio, and its backoff after failures.
struct radio_demand {
  using time_point = std::chrono::steady_clock::time_point;

  bool urgent = false;     ///< an access query waits (advertised flag bit 1)
  bool advertised = false; ///< it advertised events waiting (flag bit 0)
  time_point next_poll{};  ///< visited then even if it says nothing
  time_point waiting_since{}; ///< since when it waits (the fairness order)
  time_point retry_at{};   ///< not before this after a failure
  std::uint32_t failures = 0; ///< in a row; cleared by a working link

  /// The lock has something to say: it waits from now, unless it already did.
  void wants(time_point now) {
    if (!advertised) {
      advertised = true;
      waiting_since = now;
    }
  }
};

class radio_scheduler {
public:
  using time_point = radio_demand::time_point;

  /// Priorities, highest first; 0: nothing to do.
  enum rank : int { none = 0, poll = 1, events = 2, command = 3, access = 4 };

  /// One lock the scheduler may choose: `free` when it has no link now and
  /// its device is known to the adapter; `commands` when the cloud's
  /// commands wait for it.
  struct candidate {
    std::string id;
    radio_demand* demand = nullptr;
    bool free = false;
    bool commands = false;
  };

  radio_scheduler(std::size_t max_connections, std::chrono::seconds poll_interval)
    : max_connections_{max_connections}, poll_interval_{poll_interval} {}

  static rank rank_of(const radio_demand& d, bool commands, time_point now);

  /// The locks to connect now, in order, while fewer than max_connections
  /// links are `busy`: highest rank first, the longest waiting first within
  /// a rank; none in its backoff. Each one chosen has its next poll moved a
  /// poll interval ahead.
  std::vector<std::string> pick(std::vector<candidate>& locks, std::size_t busy,
                                time_point now) const;

  /// The delay after `failures` failures in a row: 250 ms doubling, at most 30 s.
  static std::chrono::milliseconds backoff(std::uint32_t failures);

  /// A connection failed (or was lost mid-exchange): back off.
  static void failed(radio_demand& d, time_point now);

  /// A link works: the next failure starts from the shortest backoff.
  static void succeeded(radio_demand& d) { d.failures = 0; }

  [[nodiscard]] std::size_t max_connections() const noexcept { return max_connections_; }

private:
  std::size_t max_connections_;
  std::chrono::seconds poll_interval_;
};

} // namespace lockbridge::transport
