#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/result.hpp"

namespace lockbridge::protocol {

/// What the cloud can ask a lock to do (`cmd/lock`).
enum class lock_op { unlock, lock, passage_on, passage_off };

std::string_view to_string(lock_op op) noexcept;

/// Limits of lock commands; beyond them a command is refused whole.
struct lock_command_limits {
  static constexpr std::size_t max_message_bytes = 4096;
  static constexpr std::uint32_t max_duration_s = 3600;
  /// A command may live at most this long (expires_at - now).
  static constexpr std::int64_t max_lifetime_ms = 10 * 60 * 1000;
  /// The largest expiry accepted (9999-12-31T23:59:59.999Z): an integer from
  /// outside is range-checked before it is made signed or used in arithmetic.
  static constexpr std::uint64_t max_expires_at_ms = 253402300799999;
};

/// A lock command: from the cloud's JSON, and as the lock receives it (CBOR,
/// without `lock`: the DTLS session says which lock).
struct lock_command {
  std::string id;
  std::string lock;
  lock_op op = lock_op::unlock;
  std::optional<std::uint32_t> duration_s; ///< unlock only: how long to stay open
  std::int64_t expires_at = 0;             ///< Unix ms; the lock must not act later

  friend bool operator==(const lock_command&, const lock_command&) = default;
};

/// `cmd/lock`: `{"schema":"lockbridge/lock-command/1","id","lock","op",
/// "duration"?,"expires_at"}`. Checks shape and ranges, not the time (the
/// caller compares `expires_at` with its clock).
result<lock_command> decode_lock_command(std::string_view json);

/// The body of `POST /v1/commands` to the lock: CBOR `{id, op, duration?, expires_at}`.
std::vector<std::uint8_t> encode_lock_request(const lock_command& c);
result<lock_command> decode_lock_request(std::span<const std::uint8_t> cbor);

/// The lock's answer: CBOR `{id, result: "done"|"refused"|"failed", detail?}`.
struct lock_answer {
  std::string id;
  std::string result;
  std::optional<std::string> detail;

  friend bool operator==(const lock_answer&, const lock_answer&) = default;
};

std::vector<std::uint8_t> encode_lock_answer(const lock_answer& a);
result<lock_answer> decode_lock_answer(std::span<const std::uint8_t> cbor);

/// A lock's own state (`GET /v1/state` on the lock, observed): CBOR
/// `{locked, door_open, battery, fw}`.
struct lock_state {
  bool locked = true;
  bool door_open = false;
  std::uint32_t battery = 0; ///< percent, 0-100
  std::string fw;            ///< firmware version, printable, at most 32 bytes

  friend bool operator==(const lock_state&, const lock_state&) = default;
};

std::vector<std::uint8_t> encode_lock_state(const lock_state& s);
result<lock_state> decode_lock_state(std::span<const std::uint8_t> cbor);

} // namespace lockbridge::protocol
