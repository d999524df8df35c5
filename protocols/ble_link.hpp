#pragma once

// Lock protocol v1 over BLE GATT (docs/lock-protocol.md, "BLE"): the same CBOR
// bodies as over CoAP, carried in sealed messages (AES-256-GCM under keys
// derived from the lock's PSK and both sides' nonces, with a counter against
// replay), each cut into fragments that fit one ATT value.

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/result.hpp"

namespace lockbridge::protocol::ble {

using bytes = std::vector<std::uint8_t>;

/// The lock service and its two characteristics (128-bit UUIDs, lower case
/// as BlueZ reports them).
inline constexpr std::string_view service_uuid = "6c6b6272-0001-4c42-9a7e-6c6f636b6272";
/// Written by the gateway (Write Without Response), read by the lock.
inline constexpr std::string_view to_lock_uuid = "6c6b6272-0002-4c42-9a7e-6c6f636b6272";
/// Notified by the lock, received by the gateway.
inline constexpr std::string_view from_lock_uuid = "6c6b6272-0003-4c42-9a7e-6c6f636b6272";

inline constexpr std::uint8_t version = 1;
inline constexpr std::size_t fragment_header_bytes = 4; ///< msg id (2), index, count
inline constexpr std::size_t att_overhead_bytes = 3;    ///< ATT opcode + handle
inline constexpr std::size_t max_fragments = 255;
inline constexpr std::size_t nonce_bytes = 16;
inline constexpr std::size_t header_bytes = 10; ///< version, kind, counter (8)
inline constexpr std::size_t tag_bytes = 16;
/// The largest message either side accepts (a CoAP payload's limit plus room).
inline constexpr std::size_t max_message_bytes = 16 * 1024 + 64;

/// What a message is. Hello kinds travel in the clear; all others are sealed.
enum class kind : std::uint8_t {
  hello = 0x01,        ///< gateway -> lock: gateway nonce
  hello_answer = 0x02, ///< lock -> gateway: lock nonce
  // lock -> gateway
  events = 0x11,         ///< body: event batch CBOR (as POST /v1/events)
  access = 0x12,         ///< body: access request CBOR (as POST /v1/access)
  time_request = 0x13,   ///< body: empty (as GET /v1/time)
  state = 0x14,          ///< body: lock state CBOR (as a /v1/state notification)
  command_answer = 0x15, ///< body: answer (re = the command's counter)
  idle = 0x16,           ///< body: counter of the last gateway message it got (8); nothing more to say
  // gateway -> lock
  events_answer = 0x21, ///< body: answer (re = the events message's counter)
  access_answer = 0x22,
  time_answer = 0x23,
  command = 0x24,       ///< body: command CBOR (as POST /v1/commands)
  state_request = 0x25, ///< body: empty
};

[[nodiscard]] bool is_lock_kind(kind k) noexcept;
[[nodiscard]] bool is_gateway_kind(kind k) noexcept;
[[nodiscard]] std::string_view to_string(kind k) noexcept;

// ---- fragments ---------------------------------------------------------

/// Cuts `message` into ATT values for an ATT MTU of `mtu`: each is
/// `msg_id (big endian) | index | count | chunk`. Fails when the message needs
/// more than 255 fragments at this MTU.
result<std::vector<bytes>> fragment(std::uint16_t msg_id, std::span<const std::uint8_t> message,
                                    std::size_t mtu);

/// Puts fragments back together, per link. Fragments of one message may come
/// twice (ignored), out of order, or never (the partial message is dropped
/// after a timeout). Bounded: at most 4 messages in assembly.
class reassembler {
public:
  explicit reassembler(std::int64_t timeout_ms) : timeout_ms_{timeout_ms} {}

  struct outcome {
    enum class what { partial, complete, duplicate, invalid };
    what result = what::partial;
    bytes message;          ///< when complete
    std::string diagnostic; ///< when invalid
  };

  /// One ATT value as received at `now_ms`.
  outcome add(std::span<const std::uint8_t> value, std::int64_t now_ms);

  /// Drops messages whose first fragment is older than the timeout; returns
  /// how many were dropped.
  std::size_t expire(std::int64_t now_ms);

  /// Drops everything (the link went down).
  void clear() noexcept { partial_.clear(); }

  [[nodiscard]] std::size_t in_assembly() const noexcept { return partial_.size(); }

private:
  struct part {
    std::uint8_t count = 0;
    std::int64_t first_ms = 0;
    std::size_t received = 0;
    std::vector<std::optional<bytes>> chunks;
  };
  std::int64_t timeout_ms_;
  std::map<std::uint16_t, part> partial_;
};

// ---- sealed messages ----------------------------------------------------

/// Direction of a message: each has its own key.
enum class direction : std::uint8_t { to_lock = 0x47, from_lock = 0x4c };

/// Both session keys, derived when the hello exchange completes:
/// HKDF-SHA256(ikm = PSK, salt = gateway nonce | lock nonce,
///             info = "lockbridge-ble-v1 " + direction letter + " " + lock id).
struct session_keys {
  std::array<std::uint8_t, 32> to_lock{};
  std::array<std::uint8_t, 32> from_lock{};
};

session_keys derive_session_keys(std::span<const std::uint8_t> psk, std::string_view lock_id,
                                 std::span<const std::uint8_t, nonce_bytes> gateway_nonce,
                                 std::span<const std::uint8_t, nonce_bytes> lock_nonce);

/// A hello or hello answer: `version | kind | nonce`.
bytes encode_hello(kind k, std::span<const std::uint8_t, nonce_bytes> nonce);

/// A sealed message: `version | kind | counter (8, big endian) | ciphertext |
/// tag`; AES-256-GCM, IV = 4 zero bytes | counter, AD = the 10-byte header.
bytes seal(const std::array<std::uint8_t, 32>& key, kind k, std::uint64_t counter,
           std::span<const std::uint8_t> body);

struct opened {
  kind what = kind::hello;
  std::uint64_t counter = 0;
  bytes body; ///< hello kinds: the nonce
};

/// Reads the header of any message (no key needed): fails on a wrong version,
/// an unknown kind or a short message.
result<opened> peek(std::span<const std::uint8_t> message);

/// Opens a sealed message; fails when it does not authenticate under `key`.
result<opened> open(const std::array<std::uint8_t, 32>& key, std::span<const std::uint8_t> message);

/// The answer bodies (events, access, time, command answers):
/// `re (8, big endian) | code (2, big endian, CoAP-style e.g. 204) | payload`.
struct answer {
  std::uint64_t re = 0;
  std::uint16_t code = 0;
  bytes payload;
};
bytes encode_answer(const answer& a);

/// The payload of a 503 events answer (the journal is full): CBOR
/// `{"retry_after_s": N}`; the lock keeps its events and comes back after N s.
bytes encode_retry_after(std::uint32_t seconds);
result<answer> decode_answer(std::span<const std::uint8_t> body);

} // namespace lockbridge::protocol::ble
