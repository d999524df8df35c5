#pragma once

// What the gateway needs from a way of reaching locks (CoAP/DTLS, BLE): the
// journal and the command plane talk to this and never to a particular
// transport. Kept free of CAF, libcoap and sd-bus.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/credentials.hpp"
#include "protocols/lock_commands.hpp"
#include "protocols/lock_messages.hpp"

namespace lockbridge::transport {

/// Identifies one events message waiting for the journal's answer.
using request_id = std::uint64_t;

/// Answers an access query on the transport's own thread, at once: it must
/// read what it needs directly (an LMDB read transaction) and never wait on
/// an actor. It may hand work on (journalling the decision) one-way only.
using access_handler = std::function<protocol::access_decision(
  const std::string& lock_id, const protocol::access_request& request)>;

/// Told of each access decision after its answer went out; one-way only.
using decided_handler = std::function<void(
  const std::string& lock_id, const protocol::access_request& request,
  const protocol::access_decision& decision)>;

/// The gateway's clock for a lock's time query (Unix ms; never behind the
/// highest time the gateway has seen).
using clock_source = std::function<std::int64_t()>;

/// A lock's own state as it reported it; on the transport's thread, enqueue only.
using state_handler = std::function<void(const std::string& lock, const protocol::lock_state&)>;

/// A valid events batch from a lock; on the transport's thread, enqueue only.
/// The answer comes later through `lock_transport::complete`.
using events_handler
  = std::function<void(request_id, const std::string& lock_id, protocol::event_batch)>;

/// The answer to a pending events message.
struct events_reply {
  enum class kind { acked, full, failed };
  kind result = kind::acked;
  std::uint64_t acked_seq = 0;
  std::string diagnostic; ///< for `failed`
};

/// How a command sent to a lock ended (exactly one per command).
struct command_outcome {
  enum class kind {
    answered,      ///< the lock answered: `code` and `payload`
    not_connected, ///< the lock had no session before the deadline; nothing was sent
    no_answer,     ///< sent, but no answer before the deadline
  };
  kind result = kind::no_answer;
  int code = 0; ///< CoAP-style response code as class * 100 + detail, e.g. 204
  std::vector<std::uint8_t> payload;
  std::uint32_t attempts = 0; ///< times it was sent
};
using command_callback = std::function<void(command_outcome)>;

/// An access query answered: what any transport sends back, whatever its
/// wire. `code` is CoAP-style (205 with the CBOR answer in `body`; 400, 500 or
/// 503 with a diagnostic text in `body`); `request` is set when a decision
/// was made (to be reported through `on_decided` once the answer is out).
struct access_outcome {
  int code = 500;
  std::vector<std::uint8_t> body;
  std::optional<protocol::access_request> request;
  protocol::access_decision decision;
  std::string error; ///< for a log line: why it was not decided
};

/// Decodes an access query, asks `decide` and encodes the answer. Never
/// throws: a failing decision becomes a 500 "retry".
access_outcome answer_access(const access_handler& decide, const std::string& lock,
                             std::span<const std::uint8_t> payload);

/// Lets one warning through per 10 s and counts the ones held back, so a
/// misbehaving lock or a scanner cannot flood the box's journal. Not
/// thread-safe: each belongs to one transport thread.
struct warn_limiter {
  std::chrono::steady_clock::time_point next{};
  std::uint64_t held_back = 0;

  /// True if this occurrence should be logged; `suppressed` gets how many
  /// were held back since the last one logged.
  bool allow(std::uint64_t& suppressed);
};

/// A lock's events message checked, whatever its wire: the batch to hand
/// on (`code` 0), or a CoAP-style `code` (413: too large, 400: malformed)
/// and the diagnostic to answer at once.
struct events_outcome {
  int code = 0;
  std::optional<protocol::event_batch> batch;
  std::string error;
};

/// Checks an events message (`total` bytes announced, `payload` received)
/// and decodes it; a refusal is logged for `lock` (`via`: the transport's
/// name), at most once per 10 s per lock through `limiter`. Never throws.
events_outcome check_events(std::string_view via, const std::string& lock,
                            std::span<const std::uint8_t> payload, std::size_t total,
                            warn_limiter& limiter);

/// Hands a checked batch to `on_events` (request `id`). The handler only
/// pseudonymises and enqueues; if it throws all the same (OpenSSL or memory
/// failing), the batch never reached the journal and the returned reply
/// (`failed`, "retry") is the answer to give at once, so that no request
/// waits for an answer that cannot come. Throws only if memory for that
/// answer cannot be had.
std::optional<events_reply> hand_on_events(const events_handler& on_events, request_id id,
                                           const std::string& lock, protocol::event_batch batch);

/// The last time a configured lock was turned away, and why (for the
/// operator's lock table: "wrong PSK?" is told from "no room").
struct lock_refusal {
  std::string reason;     ///< wrong_key, max_sessions, forged, replayed, bad_message
  std::string peer;       ///< address it came from
  std::int64_t at_ms = 0; ///< Unix ms of the last one
  std::uint64_t count = 0; ///< since start
};

/// Someone who presented an identity (DTLS-PSK) or address (BLE) that no
/// configured lock has: a lock configured under another id, or a stranger.
struct stranger {
  std::string identity; ///< printable form
  std::string peer;
  std::int64_t at_ms = 0;
  std::uint64_t count = 0;
};

struct refusal_report {
  std::map<std::string, lock_refusal, std::less<>> locks;
  std::vector<stranger> strangers; ///< most recent first
};

/// Where a transport notes its refusals. Thread-safe; bounded (at most
/// `max_strangers` identities are remembered, the least recent go first).
class refusal_log {
public:
  static constexpr std::size_t max_strangers = 32;

  void refused(std::string_view lock, std::string_view reason, std::string_view peer);
  void stranger(std::string_view identity, std::string_view peer);
  [[nodiscard]] refusal_report report() const;

private:
  mutable std::mutex mutex_;
  refusal_report report_;
};

/// The calls every transport makes into the gateway.
struct lock_handlers {
  events_handler on_events;
  access_handler on_access;   ///< without it, access queries are answered "unavailable"
  decided_handler on_decided;
  clock_source clock;         ///< without it, the system clock
  state_handler on_state;
};

class lock_transport {
public:
  virtual ~lock_transport() = default;

  /// Starts the transport's own thread.
  virtual void start() = 0;
  /// Stops and joins it; pending requests get no answer (locks retry them).
  virtual void stop() = 0;

  /// Answers a pending events message. Thread-safe.
  virtual void complete(request_id id, events_reply reply) = 0;

  /// Sends a command (CBOR `body`, as for `POST /v1/commands`) to `lock`,
  /// which this transport serves; `done` runs exactly once, on the
  /// transport's thread, by `deadline` at the latest. Thread-safe.
  virtual void send_command(const std::string& lock, std::vector<std::uint8_t> body,
                            std::chrono::steady_clock::time_point deadline,
                            command_callback done) = 0;

  /// When each lock last said something authentic (Unix ms), for locks heard
  /// from since start. Thread-safe.
  [[nodiscard]] virtual std::map<std::string, std::int64_t, std::less<>> last_seen() const = 0;

  /// The locks turned away since start and the strangers. Thread-safe.
  [[nodiscard]] virtual refusal_report refusals() const = 0;

  /// "coap" or "ble" (status, metrics).
  [[nodiscard]] virtual std::string_view kind() const noexcept = 0;
};

/// Several transports as one: commands go to the transport serving the
/// lock, answers to the transport that asked (request ids carry its index in
/// their top byte: a transport numbers its requests from `id_base(index)`).
class transport_set final : public lock_transport {
public:
  static constexpr request_id id_base(std::size_t index) noexcept {
    return static_cast<request_id>(index) << 56;
  }

  /// `members[i]` must number its requests from id_base(i); `lock_to_member`
  /// says which member serves each lock.
  void add(std::shared_ptr<lock_transport> member) { members_.push_back(std::move(member)); }
  void route(const std::string& lock, std::size_t member);
  /// Replaces the lock routing (a reload). Thread-safe.
  void set_routes(std::map<std::string, std::size_t, std::less<>> routes);

  void start() override;
  void stop() override;
  void complete(request_id id, events_reply reply) override;
  void send_command(const std::string& lock, std::vector<std::uint8_t> body,
                    std::chrono::steady_clock::time_point deadline,
                    command_callback done) override;
  [[nodiscard]] std::map<std::string, std::int64_t, std::less<>> last_seen() const override;
  [[nodiscard]] refusal_report refusals() const override;
  [[nodiscard]] std::string_view kind() const noexcept override { return "set"; }
  /// Which transport serves each lock ("coap", "ble"). Thread-safe.
  [[nodiscard]] std::map<std::string, std::string, std::less<>> transport_of() const;

private:
  std::vector<std::shared_ptr<lock_transport>> members_;
  mutable std::mutex mutex_;
  std::map<std::string, std::size_t, std::less<>> routes_;
};

} // namespace lockbridge::transport
