#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "transports/lock_transport.hpp"

namespace lockbridge::transport {

/// A BLE lock the gateway serves: its id, its address and its key (the same
/// per-lock secret as a CoAP lock's DTLS PSK).
struct ble_lock {
  std::string id;
  std::string address; ///< "AA:BB:CC:DD:EE:FF"
  std::vector<std::uint8_t> psk;
};

struct ble_transport_config {
  config::ble_config ble;
  std::vector<ble_lock> locks;
  lock_handlers handlers;
  request_id first_id = 1; ///< numbering of events messages (see transport_set)
  std::uint32_t full_retry_after_s = 30; ///< told to a lock when the journal is full
};

/// Counters a status report may read from any thread.
struct ble_counters {
  std::atomic<std::uint64_t> connections{0};      ///< connections that reached a session
  std::atomic<std::uint64_t> connect_failures{0}; ///< Connect, service or handshake failed
  std::atomic<std::uint64_t> messages{0};         ///< authentic messages from locks
  std::atomic<std::uint64_t> refused_forged{0};   ///< did not authenticate
  std::atomic<std::uint64_t> refused_replayed{0}; ///< counter not above the last one
  std::atomic<std::uint64_t> refused_unconfigured{0}; ///< from a device no lock is configured for
  std::atomic<std::uint64_t> bad_messages{0};     ///< authentic but malformed (answered 4.00)
  std::atomic<std::uint64_t> fragments_dropped{0}; ///< incomplete messages timed out or bad
  std::atomic<std::uint32_t> connected_now{0};
  std::atomic<std::uint32_t> connected_peak{0};
};

/// Serves BLE locks through BlueZ's D-Bus API (org.bluez on the system bus,
/// or wherever DBUS_SYSTEM_BUS_ADDRESS points). The gateway is the central:
/// it connects to a lock when the lock advertises that it has something to
/// say, when it has a command for it, or on its poll interval, at most
/// `ble.max_connections` at once, and releases it when the exchange is over.
/// On its own thread; `handlers` run there and must only enqueue (the
/// access handler reads LMDB directly). In parts: transports/bluez_client
/// (D-Bus), transports/ble_links (the locks' links and their messages) and
/// this facade (the thread, its loop, the inbox other threads write to).
class ble_transport final : public lock_transport {
public:
  /// Throws std::runtime_error only when it cannot make its wake-up
  /// eventfd. The system bus and BlueZ may come later: the transport's
  /// thread waits for them (CoAP locks go on meanwhile).
  explicit ble_transport(ble_transport_config cfg);
  ~ble_transport() override;
  ble_transport(const ble_transport&) = delete;
  ble_transport& operator=(const ble_transport&) = delete;

  void start() override;
  void stop() override;
  void complete(request_id id, events_reply reply) override;
  void send_command(const std::string& lock, std::vector<std::uint8_t> body,
                    std::chrono::steady_clock::time_point deadline,
                    command_callback done) override;
  [[nodiscard]] std::map<std::string, std::int64_t, std::less<>> last_seen() const override;
  [[nodiscard]] refusal_report refusals() const override;
  [[nodiscard]] std::string_view kind() const noexcept override { return "ble"; }

  /// Replaces the set of BLE locks (a config reload). Thread-safe. A removed
  /// lock's connection is released; a lock whose key changed uses it from
  /// its next connection.
  void set_locks(std::vector<ble_lock> locks);

  [[nodiscard]] const ble_counters& counters() const noexcept;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace lockbridge::transport
