#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "protocols/result.hpp"

namespace lockbridge::protocol {

/// Limits of lock protocol v1; a message beyond them is refused whole.
struct lock_limits {
  static constexpr std::size_t max_payload_bytes = 16 * 1024;
  static constexpr std::size_t max_events_per_batch = 64;
  static constexpr std::size_t max_type_length = 32;
  static constexpr std::size_t max_door_length = 64;
  static constexpr std::size_t max_cred_length = 128;
  static constexpr std::size_t max_detail_length = 256;
};

/// One event as a lock reports it (`POST /v1/events`). `cred` is the raw
/// credential identifier the lock read; it never leaves the ingest path in the
/// clear (see pseudonymiser).
struct lock_event {
  std::uint64_t seq = 0;          ///< the lock's own counter, strictly rising
  std::int64_t ts = 0;            ///< when it happened, Unix milliseconds (lock clock)
  std::string type;               ///< e.g. "access_granted", "door_forced"
  std::string door;               ///< door id within the site
  std::optional<std::string> cred;   ///< credential identifier, if any
  std::optional<std::string> detail; ///< short free text, never personal data
};

/// A batch of events in rising `seq` order.
struct event_batch {
  std::vector<lock_event> events;
};

/// Decodes and validates a `POST /v1/events` payload (a CBOR map
/// `{"events": [ {seq, ts, type, door, cred?, detail?}, ... ]}`).
result<event_batch> decode_event_batch(std::span<const std::uint8_t> payload);

/// Encodes a batch as a lock would send it.
std::vector<std::uint8_t> encode_event_batch(const event_batch& batch);

/// Encodes the gateway's answer `{acked_seq}`.
std::vector<std::uint8_t> encode_events_ack(std::uint64_t acked_seq);

/// Decodes the gateway's answer `{acked_seq}`.
result<std::uint64_t> decode_events_ack(std::span<const std::uint8_t> payload);

/// Encodes the answer to `GET /v1/time`: `{now}` in Unix milliseconds.
std::vector<std::uint8_t> encode_time(std::int64_t now_ms);

} // namespace lockbridge::protocol
