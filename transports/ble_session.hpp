#pragma once
// The security of one BLE session with a lock, apart from the radio: the
// gateway's hello nonce, the session keys derived from the lock's answer,
// and the counters that refuse a replay (docs/lock-protocol.md, "BLE"). The
// BLE transport keeps one per link and hands it every reassembled message;
// what comes back says whether the message established the session, is
// authentic (with its body), or is refused and why. No D-Bus, no threads:
// unit-tested with a lock played by protocols/ble_link
// (tests/transports/ble_session_test.cpp).

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "protocols/ble_link.hpp"

namespace lockbridge::transport {

class ble_session {
public:
  enum class verdict_kind {
    established, ///< the lock's hello answer: keys derived, counters reset
    authentic,   ///< sealed under this session's key, counter newer than the last
    forged,      ///< not the protocol, a gateway-only kind, out of turn, or not authentic
    replayed,    ///< authentic but not newer than the last
  };
  struct verdict {
    verdict_kind result = verdict_kind::forged;
    std::optional<protocol::ble::opened> message; ///< when authentic
    std::string reason; ///< when refused: what to log after "ble: lock {id}: "
  };

  ble_session() = default;
  ble_session(const ble_session&) = delete;
  ble_session& operator=(const ble_session&) = delete;
  ~ble_session() { end(); }

  /// Starts a handshake: forgets the last session's keys, draws a fresh
  /// nonce, and returns the hello to send.
  protocol::ble::bytes hello();

  /// Judges one reassembled message from the lock whose key is `psk`.
  verdict accept(std::span<const std::uint8_t> psk, std::string_view lock_id,
                 std::span<const std::uint8_t> message);

  /// The message of kind `k` sealed with the next counter, or nothing
  /// before the session is established.
  std::optional<protocol::ble::bytes> seal(protocol::ble::kind k,
                                           std::span<const std::uint8_t> body);

  /// Wipes the keys; a message is refused until the next hello is answered.
  void end();

  [[nodiscard]] bool established() const { return keys_.has_value(); }
  /// The counter of the last message sealed in this session (0 if none).
  [[nodiscard]] std::uint64_t last_sent() const { return send_counter_; }

private:
  enum class stage { none, hello_sent, established };
  stage stage_ = stage::none;
  std::array<std::uint8_t, protocol::ble::nonce_bytes> gateway_nonce_{};
  std::optional<protocol::ble::session_keys> keys_;
  std::uint64_t send_counter_ = 0;
  std::uint64_t recv_counter_ = 0;
};

} // namespace lockbridge::transport
