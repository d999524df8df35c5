#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "protocols/credentials.hpp"
#include "protocols/lock_commands.hpp"
#include "protocols/lock_messages.hpp"
#include "transports/lock_transport.hpp"

namespace lockbridge::transport {

/// A lock the CoAP server accepts: its id (also its DTLS PSK identity) and key.
struct coap_lock {
  std::string id;
  std::vector<std::uint8_t> psk;
};

struct coap_server_config {
  std::vector<config::listen_address> dtls_listen;
  std::vector<config::listen_address> plain_listen;
  std::vector<coap_lock> locks;
  std::uint32_t full_retry_after_s = 30;
  /// Locks served at once (with a session or in a handshake); one more is
  /// refused at its handshake, counted and logged.
  std::uint32_t max_sessions = 1000;
  /// A lock's session unused this long is released (its memory freed; the
  /// lock's next request makes a new one); 0 keeps sessions.
  std::uint32_t idle_release_s = 0;
  /// The UDP receive buffer of each listening socket (a burst of requests).
  std::uint32_t receive_buffer_kb = 4096;
  /// The calls into the gateway, as every transport takes them; all run on
  /// libcoap's thread and must only enqueue (on_access decides there).
  /// Without on_access, /v1/access answers 5.03. `on_state`: a lock's own
  /// state, observed (`GET /v1/state`, Observe) on every new session.
  lock_handlers handlers;
};

/// Counters a status report may read from any thread.
struct coap_counters {
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> refused_full{0};
  std::atomic<std::uint64_t> handshake_refusals{0};
  /// Handshakes under a known lock's identity that failed or never completed (wrong key?).
  std::atomic<std::uint64_t> wrong_key_handshakes{0};
  std::atomic<std::uint64_t> access_queries{0};
  /// Locks with a session now, and the most there were at once.
  std::atomic<std::uint32_t> sessions{0};
  std::atomic<std::uint32_t> peak_sessions{0};
  /// Handshakes refused because max_sessions locks were served already.
  std::atomic<std::uint64_t> session_refusals{0};
  /// Sessions released after idle_release_s without use.
  std::atomic<std::uint64_t> sessions_released{0};
};

/// The lock-facing CoAP server (libcoap, DTLS-PSK; plain UDP only if
/// configured). Owns libcoap's loop on its own thread. Valid event batches are
/// handed to `on_events` on that thread, which must only enqueue (a one-way
/// send); the answer comes later through `complete`, from any thread, and is
/// sent as a separate response. Bad input is answered at once with 4.xx and a
/// diagnostic, and never reaches `on_events`.
class coap_server final : public lock_transport {
public:
  /// Binds every listener; throws std::runtime_error naming the address that
  /// failed. Does not start the loop.
  explicit coap_server(coap_server_config cfg);
  ~coap_server() override;
  coap_server(const coap_server&) = delete;
  coap_server& operator=(const coap_server&) = delete;

  /// Starts the loop thread.
  void start() override;

  /// Stops and joins the loop thread; pending requests get no answer (locks
  /// retry them).
  void stop() override;

  /// Answers a pending request. Thread-safe; wakes the loop.
  void complete(request_id id, events_reply reply) override;

  /// Replaces the set of locks accepted (a config reload). Thread-safe; the
  /// loop applies it between passes. A lock no longer listed is refused from
  /// its next handshake or request (4.01); a lock whose key changed keeps its
  /// current DTLS session until it reconnects; other locks are untouched.
  void set_locks(std::vector<coap_lock> locks);

  [[nodiscard]] const coap_counters& counters() const noexcept;

  /// Sends `POST /v1/commands` with the CBOR `body` to `lock` over its current
  /// session (the lock is the DTLS client: the gateway answers on the
  /// session the lock opened). A lock without a session now gets it as soon
  /// as it makes one; an unanswered request (libcoap's retransmissions
  /// exhausted) is sent again; at `deadline` the command ends with what
  /// happened. `done` runs once, on libcoap's thread: it must only enqueue.
  /// Thread-safe.
  void send_command(const std::string& lock, std::vector<std::uint8_t> body,
                    std::chrono::steady_clock::time_point deadline,
                    command_callback done) override;

  /// When each lock last made a request the server admitted (Unix ms), for
  /// locks heard from since start. Thread-safe.
  [[nodiscard]] std::map<std::string, std::int64_t, std::less<>> last_seen() const override;
  [[nodiscard]] refusal_report refusals() const override;
  [[nodiscard]] std::string_view kind() const noexcept override { return "coap"; }

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace lockbridge::transport
