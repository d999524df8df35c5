#include "transports/coap_server.hpp"

#include <arpa/inet.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <coap3/coap.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include "protocols/log_fields.hpp"
#include "transports/contain.hpp"
#include "transports/priority.hpp"
#include "transports/thread_owner.hpp"

namespace lockbridge::transport {

namespace {

/// Text from a peer, made safe to log: printable ASCII only, at most 64 chars.
std::string printable(const std::uint8_t* data, std::size_t size) {
  std::string out;
  for (std::size_t i = 0; i < size && i < 64; ++i)
    out += (data[i] >= 0x20 && data[i] < 0x7f) ? static_cast<char>(data[i]) : '?';
  if (size > 64)
    out += "...";
  return out;
}

std::string peer_of(const coap_session_t* s) {
  char buf[INET6_ADDRSTRLEN + 8] = {0};
  coap_print_addr(coap_session_get_addr_remote(s), reinterpret_cast<unsigned char*>(buf),
                  sizeof(buf) - 1);
  return buf;
}

/// libcoap's own warnings: at most one line per 10 s (with how many were
/// held back), so a peer that fails handshakes cannot flood the journal.
/// Its per-handshake DTLS lines ("DTLS: SSL3 alert ...", "SSL_accept ...")
/// go to debug: the gateway logs each refusal itself, once, with its cause
/// (unknown identity, or a known lock with the wrong key).
std::mutex libcoap_log_mutex;
std::chrono::steady_clock::time_point libcoap_log_next{};
std::uint64_t libcoap_log_held = 0;

void route_libcoap_logs(coap_log_t level, const char* message) {
  std::string text = protocol::printable_text(message);
  while (text.size() >= 4 && (text.ends_with("\\x0a") || text.ends_with("\\x0d")))
    text.resize(text.size() - 4);
  if (level > LOG_WARNING || text.find("DTLS: ") != std::string::npos) {
    spdlog::debug("libcoap: {}", text);
    return;
  }
  std::uint64_t held = 0;
  {
    std::lock_guard guard{libcoap_log_mutex};
    auto now = std::chrono::steady_clock::now();
    if (now < libcoap_log_next) {
      ++libcoap_log_held;
      spdlog::debug("libcoap: {}", text);
      return;
    }
    libcoap_log_next = now + std::chrono::seconds{10};
    held = std::exchange(libcoap_log_held, 0);
  }
  auto tail = held > 0 ? fmt::format(" ({} more libcoap warnings not logged in the last 10 s)",
                                     held)
                       : std::string{};
  if (level <= LOG_ERR)
    spdlog::error("libcoap: {}{}", text, tail);
  else
    spdlog::warn("libcoap: {}{}", text, tail);
}

void add_cbor(coap_pdu_t* response, const std::vector<std::uint8_t>& body) {
  std::uint8_t buf[4];
  coap_add_option(response, COAP_OPTION_CONTENT_FORMAT,
                  coap_encode_var_safe(buf, sizeof buf, COAP_MEDIATYPE_APPLICATION_CBOR), buf);
  coap_add_data(response, body.size(), body.data());
}

void answer_error(coap_pdu_t* response, coap_pdu_code_t code, const std::string& diagnostic) {
  coap_pdu_set_code(response, code);
  std::uint8_t buf[4];
  coap_add_option(response, COAP_OPTION_CONTENT_FORMAT,
                  coap_encode_var_safe(buf, sizeof buf, COAP_MEDIATYPE_TEXT_PLAIN), buf);
  coap_add_data(response, diagnostic.size(),
                reinterpret_cast<const std::uint8_t*>(diagnostic.data()));
}

coap_address_t to_address(const config::listen_address& a) {
  coap_address_t addr;
  coap_address_init(&addr);
  if (inet_pton(AF_INET, a.host.c_str(), &addr.addr.sin.sin_addr) == 1) {
    addr.addr.sin.sin_family = AF_INET;
    addr.addr.sin.sin_port = htons(a.port);
    addr.size = sizeof(addr.addr.sin);
  } else if (inet_pton(AF_INET6, a.host.c_str(), &addr.addr.sin6.sin6_addr) == 1) {
    addr.addr.sin6.sin6_family = AF_INET6;
    addr.addr.sin6.sin6_port = htons(a.port);
    addr.size = sizeof(addr.addr.sin6);
  } else {
    throw std::runtime_error{"not a numeric address: " + a.host};
  }
  return addr;
}

/// libcoap 4.3.1 does not expose an endpoint's socket: finds the UDP socket
/// bound to `addr` among the process's descriptors (-1 if none).
int bound_udp_socket(const coap_address_t& addr) {
  std::error_code ec;
  std::filesystem::directory_iterator end;
  for (std::filesystem::directory_iterator i{"/proc/self/fd", ec}; !ec && i != end;
       i.increment(ec)) {
    const auto& entry = *i;
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (const std::exception&) {
      continue;
    }
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_DGRAM)
      continue;
    sockaddr_storage bound{};
    socklen_t size = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size) != 0
        || bound.ss_family != addr.addr.sa.sa_family)
      continue;
    if (bound.ss_family == AF_INET) {
      const auto& b = reinterpret_cast<const sockaddr_in&>(bound);
      if (b.sin_port == addr.addr.sin.sin_port
          && b.sin_addr.s_addr == addr.addr.sin.sin_addr.s_addr)
        return fd;
    } else if (bound.ss_family == AF_INET6) {
      const auto& b = reinterpret_cast<const sockaddr_in6&>(bound);
      if (b.sin6_port == addr.addr.sin6.sin6_port
          && std::memcmp(&b.sin6_addr, &addr.addr.sin6.sin6_addr, sizeof b.sin6_addr) == 0)
        return fd;
    }
  }
  return -1;
}

/// A burst of requests from many locks (a site's power coming back) arrives
/// faster than one loop pass reads it; the kernel drops what the socket's
/// receive buffer cannot hold and the locks retry only after CoAP's
/// ACK_TIMEOUT (2-3 s). The buffer is made `bytes` large: beyond
/// net.core.rmem_max with CAP_NET_ADMIN, else up to it (then said once).
void enlarge_receive_buffer(const coap_address_t& addr, const std::string& where, int bytes) {
  int fd = bound_udp_socket(addr);
  if (fd < 0) {
    spdlog::debug("coap: no socket found for {} to enlarge its receive buffer", where);
    return;
  }
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  int actual = 0;
  socklen_t len = sizeof actual;
  ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &actual, &len);
  // Linux reports twice the size asked for (its bookkeeping included).
  if (actual / 2 < bytes)
    spdlog::warn("coap: the receive buffer for {} is {} KiB, not the {} KiB of "
                 "coap.receive_buffer_kb: raise the kernel's net.core.rmem_max (sysctl), or a "
                 "burst of lock requests may be dropped and retried seconds later",
                 where, actual / 2 / 1024, bytes / 1024);
  else
    spdlog::debug("coap: receive buffer for {}: {} KiB", where, actual / 2 / 1024);
}

std::once_flag libcoap_started;

/// libcoap 4.3.1 has no per-context user data; event callbacks find their
/// server through this registry.
std::mutex registry_mutex;
std::map<const coap_context_t*, void*> registry;

/// Pipelined separate responses: how many CON responses a session may have
/// unacknowledged at once (RFC 7252's NSTART defaults to 1, which would send
/// a busy lock's answers one round trip at a time).
constexpr std::uint16_t server_nstart = 16;

} // namespace

struct coap_server::impl {
  struct lock_entry {
    std::string id;
    std::vector<std::uint8_t> psk;
    coap_bin_const_t psk_bin{};
    mutable warn_limiter bad_batch_warnings; // only libcoap's thread uses it
    mutable warn_limiter wrong_key_warnings;
    /// False once a reload removed the lock. Entries are never erased: live
    /// DTLS sessions point at them.
    bool active = true;
  };

  warn_limiter unknown_identity_warnings;
  warn_limiter session_limit_warnings;
  warn_limiter dtls_error_warnings;

  /// Handshakes under a known lock's identity that have not completed: a
  /// lock with the wrong key never completes one (DTLS drops the records
  /// that fail to authenticate, so no error is raised). Only libcoap's
  /// thread uses it; the session pointers are compared, never followed.
  struct handshake {
    lock_entry* lock = nullptr;
    std::string peer;
    std::chrono::steady_clock::time_point began{};
  };
  std::map<const coap_session_t*, handshake> handshakes;
  static constexpr auto handshake_limit = std::chrono::seconds{10};

  /// Says which known locks' handshakes did not complete in time: the
  /// lock's key is probably not its psk_file's (at most one line per lock
  /// per 10 s).
  void check_handshakes() {
    auto now = std::chrono::steady_clock::now();
    for (auto it = handshakes.begin(); it != handshakes.end();) {
      if (now - it->second.began < handshake_limit) {
        ++it;
        continue;
      }
      ++counters.handshake_refusals;
      ++counters.wrong_key_handshakes;
      refusals.refused(it->second.lock->id, "wrong_key", it->second.peer);
      std::uint64_t suppressed = 0;
      if (it->second.lock->wrong_key_warnings.allow(suppressed))
        spdlog::warn("coap: lock {}: a DTLS handshake from {} under its identity did not "
                     "complete within {} s: wrong PSK? (the lock's key must be the content of "
                     "its psk_file){}",
                     it->second.lock->id, it->second.peer, handshake_limit.count(),
                     suppressed > 0 ? fmt::format(" ({} more not logged in the last 10 s)",
                                                  suppressed)
                                    : std::string{});
      it = handshakes.erase(it);
    }
  }

  /// Who was turned away, for the lock table.
  refusal_log refusals;

  /// When each lock was last heard from (any admitted request).
  mutable std::mutex seen_mutex;
  std::map<std::string, std::int64_t, std::less<>> seen;

  /// Each lock's latest session (referenced), to send it commands, and when
  /// the lock last used it. Only libcoap's thread uses it.
  struct live_session {
    coap_session_t* session = nullptr;
    std::chrono::steady_clock::time_point used{};
  };
  std::map<std::string, live_session, std::less<>> live;

  /// Sessions made since the last loop pass, by lock, whose OpenSSL write
  /// buffer is still sized for a full 16 KiB TLS record.
  std::vector<std::pair<std::string, coap_session_t*>> untrimmed;

  /// Shrinks each new session's OpenSSL write buffer to what libcoap can
  /// send on it. A DTLS record never spans datagrams, libcoap never sends a
  /// PDU larger than the session's MTU allows, and OpenSSL allocates a write
  /// buffer for the largest record it may send: 16.7 KiB per session for a
  /// few hundred bytes of acknowledgements and decisions (docs/design.md,
  /// decision 58). Runs between libcoap's passes, when no OpenSSL call is in
  /// progress on the session; a DTLS write leaves nothing in the buffer.
  void trim_write_buffers() {
    for (const auto& [lock, s] : untrimmed) {
      auto it = live.find(lock);
      if (it == live.end() || it->second.session != s)
        continue; // replaced or released meanwhile
      coap_tls_library_t library{};
      auto ssl = static_cast<SSL*>(coap_session_get_tls(s, &library));
      if (ssl == nullptr || library != COAP_TLS_LIBRARY_OPENSSL || SSL_has_pending(ssl) != 0
          || SSL_is_init_finished(ssl) == 0)
        continue;
      auto fragment = std::clamp<std::size_t>(coap_session_max_pdu_size(s) + trimmed_margin,
                                              trimmed_fragment, SSL3_RT_MAX_PLAIN_LENGTH);
      if (SSL_set_max_send_fragment(ssl, static_cast<long>(fragment)) == 1)
        if (SSL_alloc_buffers(ssl) == 1) // frees the 16 KiB buffer, allocates the smaller one
          ++freed_since_trim;
    }
    untrimmed.clear();
  }
  static constexpr std::size_t trimmed_fragment = 2048;
  static constexpr std::size_t trimmed_margin = 64;

  /// Gives the pages of freed session buffers back to the system. A storm
  /// of handshakes allocates every session's buffers before any is trimmed
  /// or released, so the holes they leave are in the middle of the heap,
  /// where free() keeps them resident. At most once a second, and only
  /// after many were freed: malloc_trim walks the whole heap.
  void return_freed_memory() {
    if (freed_since_trim < trim_threshold)
      return;
    auto now = std::chrono::steady_clock::now();
    if (now < next_malloc_trim)
      return;
    next_malloc_trim = now + std::chrono::seconds{1};
    freed_since_trim = 0;
    ::malloc_trim(0);
  }
  std::size_t freed_since_trim = 0;
  static constexpr std::size_t trim_threshold = 32;
  std::chrono::steady_clock::time_point next_malloc_trim{};

  void count_sessions() {
    auto n = static_cast<std::uint32_t>(live.size());
    counters.sessions = n;
    if (n > counters.peak_sessions)
      counters.peak_sessions = n;
  }

  /// The lock whose live session `s` is, or nullptr.
  live_session* live_of(coap_session_t* s) {
    auto lock = static_cast<lock_entry*>(coap_session_get_app_data(s));
    if (lock == nullptr)
      return nullptr;
    auto it = live.find(lock->id);
    return it != live.end() && it->second.session == s ? &it->second : nullptr;
  }

  /// Releases the sessions of locks that used them less recently than
  /// idle_release_s ago and have nothing in flight on them: libcoap frees a
  /// session nobody references once it has been quiet for its session
  /// timeout (set to the same bound), which ends the DTLS association; the
  /// lock's next request makes a new one. Its state is observed again then.
  void release_idle_sessions() {
    if (cfg.idle_release_s == 0)
      return;
    auto now = std::chrono::steady_clock::now();
    if (now < next_idle_check)
      return;
    next_idle_check = now + std::chrono::seconds{1};
    auto bound = std::chrono::seconds{cfg.idle_release_s};
    for (auto it = live.begin(); it != live.end();) {
      auto s = it->second.session;
      bool busy = now - it->second.used < bound
                  || std::any_of(pending.begin(), pending.end(),
                                 [s](const auto& p) { return p.second.session == s; })
                  || std::any_of(commands.begin(), commands.end(),
                                 [&](const auto& c) { return c.lock == it->first; });
      if (busy) {
        ++it;
        continue;
      }
      spdlog::debug("coap: lock {}: session unused for {} s released (coap.idle_release_s)",
                    it->first, cfg.idle_release_s);
      observations.erase(it->first);
      coap_session_release(s);
      it = live.erase(it);
      ++counters.sessions_released;
      ++freed_since_trim;
    }
    count_sessions();
  }
  std::chrono::steady_clock::time_point next_idle_check{};

  /// Commands to locks: queued by any thread, then owned by libcoap's.
  struct outgoing_command {
    std::string lock;
    std::vector<std::uint8_t> body;
    std::chrono::steady_clock::time_point deadline;
    command_callback done;
    std::vector<std::uint8_t> token; ///< of the request in flight (empty: not sent)
    coap_session_t* session = nullptr; ///< it was sent on (not referenced)
    std::uint32_t attempts = 0;
  };
  std::deque<outgoing_command> new_commands; // under queue_mutex
  std::list<outgoing_command> commands;      // libcoap's thread

  /// Observations of locks' state: the token of the GET /v1/state with
  /// Observe on each lock's current session.
  struct observation {
    coap_session_t* session = nullptr; ///< not referenced: `live` holds it
    std::vector<std::uint8_t> token;
  };
  std::map<std::string, observation, std::less<>> observations;

  /// A confirmable request to a lock on its session `s`: a fresh token, Observe
  /// (when `observe`), the Uri-Path `v1/<resource>`, and a CBOR body if any.
  /// Sent with libcoap; returns the token, or nothing if it could not be sent.
  static std::optional<std::vector<std::uint8_t>>
  send_request(coap_session_t* s, coap_pdu_code_t code, std::string_view resource,
               bool observe, std::span<const std::uint8_t> body) {
    auto pdu = coap_new_pdu(COAP_MESSAGE_CON, code, s);
    if (pdu == nullptr)
      return std::nullopt;
    std::uint8_t token[8];
    std::size_t token_len = 0;
    coap_session_new_token(s, &token_len, token);
    std::uint8_t buf[4];
    auto path = [&](std::string_view part) {
      return coap_add_option(pdu, COAP_OPTION_URI_PATH, part.size(),
                             reinterpret_cast<const std::uint8_t*>(part.data())) != 0;
    };
    // Options in number order: Observe (6), Uri-Path (11), Content-Format (12).
    bool ok = coap_add_token(pdu, token_len, token) != 0
              && (!observe
                  || coap_add_option(pdu, COAP_OPTION_OBSERVE,
                                     coap_encode_var_safe(buf, sizeof buf, COAP_OBSERVE_ESTABLISH),
                                     buf) != 0)
              && path("v1") && path(resource)
              && (body.empty()
                  || (coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                                      coap_encode_var_safe(buf, sizeof buf,
                                                           COAP_MEDIATYPE_APPLICATION_CBOR),
                                      buf) != 0
                      && coap_add_data(pdu, body.size(), body.data()) != 0));
    if (!ok) {
      coap_delete_pdu(pdu);
      return std::nullopt;
    }
    if (coap_send(s, pdu) == COAP_INVALID_MID)
      return std::nullopt;
    return std::vector<std::uint8_t>(token, token + token_len);
  }

  /// Asks the lock for its state and to notify changes (RFC 7641).
  void observe_state(const std::string& lock, coap_session_t* s) {
    if (!cfg.handlers.on_state)
      return;
    if (auto token = send_request(s, COAP_REQUEST_CODE_GET, "state", true, {}))
      observations[lock] = observation{s, std::move(*token)};
  }

  /// A response to an observation (the first answer or a notification).
  bool on_state_response(coap_session_t* s, const coap_bin_const_t& token,
                         const coap_pdu_t* received) {
    for (const auto& [lock, o] : observations) {
      if (o.session != s || o.token.size() != token.length
          || !std::equal(o.token.begin(), o.token.end(), token.s))
        continue;
      if (COAP_RESPONSE_CLASS(coap_pdu_get_code(received)) != 2)
        return true; // the lock does not offer its state: availability only
      std::size_t len = 0;
      const std::uint8_t* data = nullptr;
      coap_get_data(received, &len, &data);
      auto state = protocol::decode_lock_state({data, len});
      if (!state) {
        std::uint64_t suppressed = 0;
        auto entry = locks.find(lock);
        if (entry != locks.end() && entry->second.bad_batch_warnings.allow(suppressed))
          spdlog::warn("coap: lock {} sent a state that is not valid: {}", lock,
                       state.error().to_string());
        return true;
      }
      cfg.handlers.on_state(lock, *state);
      return true;
    }
    return false;
  }

  /// On libcoap's thread: the lock's session became `s` (it made a request).
  void note_session(const std::string& lock, coap_session_t* s) {
    auto now = std::chrono::steady_clock::now();
    auto it = live.find(lock);
    if (it != live.end() && it->second.session == s) {
      it->second.used = now;
      return;
    }
    coap_session_reference(s);
    if (it != live.end()) {
      coap_session_release(it->second.session);
      it->second = {s, now};
    } else {
      live.emplace(lock, live_session{s, now});
      count_sessions();
    }
    untrimmed.emplace_back(lock, s);
    observe_state(lock, s);
    send_waiting_commands();
  }

  void forget_session(coap_session_t* s) {
    std::erase_if(observations, [s](const auto& o) { return o.second.session == s; });
    for (auto it = live.begin(); it != live.end(); ++it)
      if (it->second.session == s) {
        coap_session_release(s);
        live.erase(it);
        count_sessions();
        break;
      }
    for (auto& c : commands)
      if (c.session == s) {
        c.session = nullptr;
        c.token.clear(); // sent again on the lock's next session
      }
  }

  /// Sends every command that is not in flight and whose lock has a session.
  void send_waiting_commands() {
    io_thread.check();
    for (auto& c : commands) {
      if (!c.token.empty())
        continue;
      auto it = live.find(c.lock);
      if (it == live.end())
        continue;
      auto s = it->second.session;
      auto token = send_request(s, COAP_REQUEST_CODE_POST, "commands", false, c.body);
      if (!token)
        continue; // tried again on the next pass
      c.token = std::move(*token);
      c.session = s;
      ++c.attempts;
    }
  }

  /// Ends commands past their deadline.
  void expire_commands() {
    auto now = std::chrono::steady_clock::now();
    for (auto it = commands.begin(); it != commands.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      command_outcome out;
      out.result = it->attempts == 0 ? command_outcome::kind::not_connected
                                     : command_outcome::kind::no_answer;
      out.attempts = it->attempts;
      it->done(std::move(out));
      it = commands.erase(it);
    }
  }

  void take_new_commands() {
    std::deque<outgoing_command> batch;
    {
      std::lock_guard guard{queue_mutex};
      batch.swap(new_commands);
    }
    for (auto& c : batch)
      commands.push_back(std::move(c));
    if (!batch.empty())
      send_waiting_commands();
  }

  static coap_response_t on_response_body(coap_session_t* s, const coap_pdu_t* received) {
    auto self = of(s);
    if (self == nullptr)
      return COAP_RESPONSE_OK;
    if (auto l = self->live_of(s))
      l->used = std::chrono::steady_clock::now();
    auto token = coap_pdu_get_token(received);
    if (self->on_state_response(s, token, received))
      return COAP_RESPONSE_OK;
    for (auto it = self->commands.begin(); it != self->commands.end(); ++it) {
      if (it->session != s || it->token.size() != token.length
          || !std::equal(it->token.begin(), it->token.end(), token.s))
        continue;
      command_outcome out;
      out.result = command_outcome::kind::answered;
      auto code = coap_pdu_get_code(received);
      out.code = static_cast<int>(COAP_RESPONSE_CLASS(code)) * 100 + (code & 0x1f);
      std::size_t len = 0;
      const std::uint8_t* data = nullptr;
      if (coap_get_data(received, &len, &data) && len <= 4096)
        out.payload.assign(data, data + len);
      out.attempts = it->attempts;
      it->done(std::move(out));
      self->commands.erase(it);
      break;
    }
    return COAP_RESPONSE_OK;
  }

  static void on_nack_body(coap_session_t* s, const coap_pdu_t* sent) {
    auto self = of(s);
    if (self == nullptr || sent == nullptr)
      return;
    auto token = coap_pdu_get_token(sent);
    for (auto& c : self->commands)
      if (c.session == s && c.token.size() == token.length
          && std::equal(c.token.begin(), c.token.end(), token.s)) {
        c.token.clear(); // not answered: sent again while the deadline allows
        c.session = nullptr;
      }
  }

  struct pending_request {
    coap_session_t* session = nullptr; // referenced until answered
    std::vector<std::uint8_t> token;
  };

  coap_server_config cfg;
  events_handler on_events;
  coap_context_t* ctx = nullptr;
  std::map<std::string, lock_entry, std::less<>> locks;
  std::map<request_id, pending_request> pending;
  request_id next_id = 1;
  coap_counters counters;

  int wake_fd = -1;
  std::mutex queue_mutex;
  std::deque<std::pair<request_id, events_reply>> completions;
  std::optional<std::vector<coap_lock>> new_locks; // under queue_mutex

  thread_owner io_thread; ///< libcoap's loop: the only thread touching the context

  /// On libcoap's thread: applies a reload's lock set.
  void apply_new_locks() {
    io_thread.check();
    std::optional<std::vector<coap_lock>> update;
    {
      std::lock_guard guard{queue_mutex};
      update.swap(new_locks);
    }
    if (!update)
      return;
    for (auto& [id, e] : locks)
      e.active = false;
    for (auto& l : *update) {
      auto& e = locks[l.id];
      e.id = l.id;
      e.psk = std::move(l.psk);
      e.psk_bin = coap_bin_const_t{e.psk.size(), e.psk.data()};
      e.active = true;
    }
  }
  std::atomic<bool> running{false};
  std::thread thread;

  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  /// Also runs when the constructor throws half-way.
  ~impl() {
    for (auto& [id, p] : pending)
      coap_session_release(p.session);
    pending.clear();
    for (auto& [lock, l] : live)
      coap_session_release(l.session);
    live.clear();
    if (ctx != nullptr) {
      coap_free_context(ctx);
      std::lock_guard guard{registry_mutex};
      registry.erase(ctx);
    }
    if (wake_fd >= 0)
      ::close(wake_fd);
  }

  static impl* of(coap_session_t* s) {
    std::lock_guard guard{registry_mutex};
    auto it = registry.find(coap_session_get_context(s));
    return it == registry.end() ? nullptr : static_cast<impl*>(it->second);
  }

  static const coap_bin_const_t* on_identity_body(coap_bin_const_t* identity,
                                                  coap_session_t* session, void* arg) {
    auto self = static_cast<impl*>(arg);
    std::string_view id{reinterpret_cast<const char*>(identity->s), identity->length};
    auto it = self->locks.find(id);
    if (it == self->locks.end() || !it->second.active) {
      ++self->counters.handshake_refusals;
      self->refusals.stranger(id, peer_of(session));
      std::uint64_t suppressed = 0;
      if (self->unknown_identity_warnings.allow(suppressed))
        spdlog::warn("coap: DTLS handshake from {} refused: unknown PSK identity \"{}\"{}",
                     peer_of(session), printable(identity->s, identity->length),
                     suppressed > 0 ? fmt::format(" ({} more such refusals not logged in the "
                                                  "last 10 s)",
                                                  suppressed)
                                    : std::string{});
      return nullptr;
    }
    if (!self->live.contains(it->first)
        && self->live.size() + self->handshakes.size() >= self->cfg.max_sessions) {
      // Bounded memory: a lock beyond the maximum is refused, not served by
      // growing. It tries again later; a lock already served is not affected.
      ++self->counters.session_refusals;
      self->refusals.refused(it->first, "max_sessions", peer_of(session));
      std::uint64_t suppressed = 0;
      if (self->session_limit_warnings.allow(suppressed))
        spdlog::warn("coap: DTLS handshake from {} as lock {} refused: {} locks are served "
                     "already (coap.max_sessions); raise it if the box has the memory, or "
                     "move locks to another gateway{}",
                     peer_of(session), it->first, self->cfg.max_sessions,
                     suppressed > 0 ? fmt::format(" ({} more such refusals not logged in the "
                                                  "last 10 s)",
                                                  suppressed)
                                    : std::string{});
      return nullptr;
    }
    coap_session_set_app_data(session, &it->second);
    self->handshakes[session] = {&it->second, peer_of(session), std::chrono::steady_clock::now()};
    return &it->second.psk_bin;
  }

  static int on_event_body(coap_session_t* session, const coap_event_t event) {
    auto self = of(session);
    if (event == COAP_EVENT_DTLS_ERROR) {
      auto lock = static_cast<lock_entry*>(coap_session_get_app_data(session));
      if (self != nullptr) {
        self->handshakes.erase(session);
        // An unknown identity was counted and logged when it was refused.
        if (lock != nullptr) {
          ++self->counters.handshake_refusals;
          self->refusals.refused(lock->id, "wrong_key", peer_of(session));
        }
        std::uint64_t suppressed = 0;
        if (lock != nullptr && lock->wrong_key_warnings.allow(suppressed))
          spdlog::warn("coap: DTLS handshake from {} as lock {} failed: wrong PSK? (the lock's "
                       "key must be the content of its psk_file)",
                       peer_of(session), lock->id);
        else if (lock == nullptr && self->dtls_error_warnings.allow(suppressed))
          spdlog::debug("coap: DTLS error on session from {}", peer_of(session));
      }
    } else if (event == COAP_EVENT_DTLS_CLOSED || event == COAP_EVENT_SESSION_CLOSED) {
      if (self != nullptr) {
        self->handshakes.erase(session);
        self->forget_session(session);
      }
    } else if (event == COAP_EVENT_DTLS_CONNECTED) {
      if (self != nullptr)
        self->handshakes.erase(session);
      auto lock = static_cast<lock_entry*>(coap_session_get_app_data(session));
      spdlog::info("coap: lock {} connected over DTLS from {}", lock ? lock->id : "?",
                   peer_of(session));
    }
    return 0;
  }

  /// The lock of a POST with a CBOR body, or nullptr once `response` says
  /// why not (4.01 unknown lock, 4.15 another Content-Format).
  const lock_entry* admit(coap_session_t* s, const coap_pdu_t* request, const coap_string_t* query,
                          coap_pdu_t* response) {
    auto lock = lock_of(s, query);
    if (lock == nullptr) {
      ++counters.bad_requests;
      answer_error(response, COAP_RESPONSE_CODE_UNAUTHORIZED,
                   "unknown lock; use DTLS with the lock's PSK identity");
      return nullptr;
    }
    note_session(lock->id, s);
    {
      auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
      std::lock_guard guard{seen_mutex};
      auto it = seen.find(lock->id);
      if (it == seen.end())
        seen.emplace(lock->id, now);
      else
        it->second = now;
    }
    coap_opt_iterator_t it;
    if (auto opt = coap_check_option(request, COAP_OPTION_CONTENT_FORMAT, &it)) {
      auto format = coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
      if (format != COAP_MEDIATYPE_APPLICATION_CBOR) {
        ++counters.bad_requests;
        answer_error(response, COAP_RESPONSE_CODE_UNSUPPORTED_CONTENT_FORMAT,
                     "expected Content-Format 60 (application/cbor)");
        return nullptr;
      }
    }
    return lock;
  }

  /// The lock a request speaks for: its DTLS identity, or `?lock=ID` on plain
  /// CoAP (development only).
  const lock_entry* lock_of(coap_session_t* s, const coap_string_t* query) {
    if (coap_session_get_proto(s) == COAP_PROTO_DTLS) {
      auto lock = static_cast<lock_entry*>(coap_session_get_app_data(s));
      return lock != nullptr && lock->active ? lock : nullptr;
    }
    if (query == nullptr)
      return nullptr;
    std::string_view q{reinterpret_cast<const char*>(query->s), query->length};
    if (!q.starts_with("lock="))
      return nullptr;
    auto it = locks.find(q.substr(5));
    return it == locks.end() || !it->second.active ? nullptr : &it->second;
  }

  static void on_events_request_body(coap_resource_t* resource, coap_session_t* s,
                                     const coap_pdu_t* request, const coap_string_t* query,
                                     coap_pdu_t* response) {
    auto self = static_cast<impl*>(coap_resource_get_userdata(resource));
    auto token = coap_pdu_get_token(request);
    if (auto async = coap_find_async(s, token)) {
      self->answer_async(async, response);
      return;
    }
    ++self->counters.requests;
    auto lock = self->admit(s, request, query, response);
    if (lock == nullptr)
      return;
    std::size_t size = 0, offset = 0, total = 0;
    const std::uint8_t* data = nullptr;
    if (!coap_get_data_large(request, &size, &data, &offset, &total))
      size = 0;
    auto checked = check_events("coap", lock->id, {data, size}, std::max(size, total),
                                lock->bad_batch_warnings);
    if (!checked.batch) {
      ++self->counters.bad_requests;
      if (checked.code == 400)
        self->refusals.refused(lock->id, "bad_message", peer_of(s));
      answer_error(response, static_cast<coap_pdu_code_t>(COAP_RESPONSE_CODE(checked.code)),
                   checked.error);
      return;
    }
    auto async = coap_register_async(s, request, 0);
    if (async == nullptr) {
      answer_error(response, COAP_RESPONSE_CODE_SERVICE_UNAVAILABLE, "gateway busy; retry");
      return;
    }
    coap_session_set_nstart(s, server_nstart);
    auto id = self->next_id++;
    self->pending.emplace(id, pending_request{coap_session_reference(s),
                                              std::vector<std::uint8_t>(token.s, token.s + token.length)});
    if (auto failed = hand_on_events(self->on_events, id, lock->id, std::move(*checked.batch)))
      self->enqueue_reply(id, std::move(*failed)); // answered on the loop's next pass
    // No response code: libcoap sends an empty ACK now, the answer later.
  }

  void answer_async(coap_async_t* async, coap_pdu_t* response) {
    auto reply = static_cast<events_reply*>(coap_async_get_app_data(async));
    coap_async_set_app_data(async, nullptr);
    if (reply == nullptr) {
      answer_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "no answer recorded");
      return;
    }
    switch (reply->result) {
      case events_reply::kind::acked:
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_CHANGED);
        add_cbor(response, protocol::encode_events_ack(reply->acked_seq));
        break;
      case events_reply::kind::full: {
        ++counters.refused_full;
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_SERVICE_UNAVAILABLE);
        std::uint8_t buf[4];
        coap_add_option(response, COAP_OPTION_MAXAGE,
                        coap_encode_var_safe(buf, sizeof buf, cfg.full_retry_after_s), buf);
        std::string text = "journal full; keep the events and retry after Max-Age";
        coap_add_data(response, text.size(), reinterpret_cast<const std::uint8_t*>(text.data()));
        break;
      }
      case events_reply::kind::failed:
        answer_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, reply->diagnostic);
        break;
    }
    delete reply;
  }

  static void on_time_request_body(coap_resource_t* resource, coap_pdu_t* response) {
    auto self = static_cast<impl*>(coap_resource_get_userdata(resource));
    auto now = self->cfg.handlers.clock ? self->cfg.handlers.clock()
                               : std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_CONTENT);
    add_cbor(response, protocol::encode_time(now));
  }

  static void on_access_request_body(coap_resource_t* resource, coap_session_t* s,
                                     const coap_pdu_t* request, const coap_string_t* query,
                                     coap_pdu_t* response) {
    auto self = static_cast<impl*>(coap_resource_get_userdata(resource));
    ++self->counters.access_queries;
    auto lock = self->admit(s, request, query, response);
    if (lock == nullptr)
      return;
    std::size_t size = 0;
    const std::uint8_t* data = nullptr;
    if (!coap_get_data(request, &size, &data))
      size = 0;
    auto out = answer_access(self->cfg.handlers.on_access, lock->id, {data, size});
    if (out.code == 400) {
      ++self->counters.bad_requests;
      self->refusals.refused(lock->id, "bad_message", peer_of(s));
      std::uint64_t suppressed = 0;
      if (lock->bad_batch_warnings.allow(suppressed))
        spdlog::warn("coap: lock {} sent a bad access query: {}", lock->id, out.error);
    } else if (out.code == 500) {
      spdlog::error("coap: access decision for lock {} failed: {}", lock->id, out.error);
    }
    if (out.code != 205) {
      answer_error(response, static_cast<coap_pdu_code_t>(COAP_RESPONSE_CODE(out.code)),
                   std::string(out.body.begin(), out.body.end()));
      return;
    }
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_CONTENT);
    add_cbor(response, out.body);
    // Journalling waits until the answer is on its way (after this pass).
    if (self->cfg.handlers.on_decided)
      self->decided.push_back({lock->id, std::move(*out.request), out.decision});
  }

  struct decided_item {
    std::string lock;
    protocol::access_request request;
    protocol::access_decision decision;
  };
  std::vector<decided_item> decided;

  void report_decisions() {
    for (auto& d : decided)
      cfg.handlers.on_decided(d.lock, d.request, d.decision);
    decided.clear();
  }

  /// Queues the answer to request `id` for the I/O thread. Any thread.
  void enqueue_reply(request_id id, events_reply reply) {
    bool first = false;
    {
      std::lock_guard guard{queue_mutex};
      first = completions.empty();
      completions.emplace_back(id, std::move(reply));
    }
    // One wake-up per drain: the loop takes the whole queue at once, so only
    // the completion that finds it empty needs to knock.
    if (first) {
      std::uint64_t one = 1;
      [[maybe_unused]] auto r = ::write(wake_fd, &one, sizeof one);
    }
  }

  void drain_completions() {
    io_thread.check();
    std::deque<std::pair<request_id, events_reply>> batch;
    {
      std::lock_guard guard{queue_mutex};
      batch.swap(completions);
    }
    for (auto& [id, reply] : batch) {
      auto it = pending.find(id);
      if (it == pending.end())
        continue;
      auto& p = it->second;
      coap_bin_const_t token{p.token.size(), p.token.data()};
      if (auto async = coap_find_async(p.session, token)) {
        coap_async_set_app_data(async, new events_reply(std::move(reply)));
        coap_async_trigger(async);
      }
      coap_session_release(p.session);
      pending.erase(it);
    }
  }

  // ---- the callbacks libcoap calls: nothing may unwind through it ----------

  static void answer_internal_error(coap_pdu_t* response) {
    answer_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "internal error; retry");
  }

  static coap_response_t on_response(coap_session_t* s, const coap_pdu_t*,
                                     const coap_pdu_t* received, const coap_mid_t) {
    return contain("coap: a response from a lock", [&] { return on_response_body(s, received); },
                   [] { return COAP_RESPONSE_OK; });
  }

  static void on_nack(coap_session_t* s, const coap_pdu_t* sent, const coap_nack_reason_t,
                      const coap_mid_t) {
    contain("coap: an unanswered request", [&] { on_nack_body(s, sent); }, [] {});
  }

  static const coap_bin_const_t* on_identity(coap_bin_const_t* identity, coap_session_t* session,
                                             void* arg) {
    return contain("coap: a DTLS handshake",
                   [&] { return on_identity_body(identity, session, arg); },
                   []() -> const coap_bin_const_t* { return nullptr; });
  }

  static int on_event(coap_session_t* session, const coap_event_t event) {
    return contain("coap: a session event", [&] { return on_event_body(session, event); },
                   [] { return 0; });
  }

  static void on_events_request(coap_resource_t* resource, coap_session_t* s,
                                const coap_pdu_t* request, const coap_string_t* query,
                                coap_pdu_t* response) {
    contain("coap: POST /v1/events",
            [&] { on_events_request_body(resource, s, request, query, response); },
            [&] { answer_internal_error(response); });
  }

  static void on_time_request(coap_resource_t* resource, coap_session_t*, const coap_pdu_t*,
                              const coap_string_t*, coap_pdu_t* response) {
    contain("coap: GET /v1/time", [&] { on_time_request_body(resource, response); },
            [&] { answer_internal_error(response); });
  }

  static void on_access_request(coap_resource_t* resource, coap_session_t* s,
                                const coap_pdu_t* request, const coap_string_t* query,
                                coap_pdu_t* response) {
    contain("coap: POST /v1/access",
            [&] { on_access_request_body(resource, s, request, query, response); },
            [&] { answer_internal_error(response); });
  }

  void loop() {
    io_thread.claim();
    int coap_fd = coap_context_get_coap_fd(ctx);
    pollfd fds[2] = {{coap_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    while (running.load(std::memory_order_relaxed)) {
      // libcoap's own timers (retransmissions, async triggers) are behind its
      // fd; bound the wait anyway so stop() is seen promptly.
      int rc = ::poll(fds, 2, 1000);
      if (rc < 0 && errno != EINTR) {
        spdlog::error("coap: poll failed: {}", std::strerror(errno));
        break;
      }
      // One pass; an exception in lockbridge's own work on this thread is
      // contained like one in a callback (the thread must not end).
      bool io_failed = contain(
        "coap: the I/O thread",
        [&] {
          if (fds[1].revents & POLLIN) {
            std::uint64_t n;
            [[maybe_unused]] auto r = ::read(wake_fd, &n, sizeof n);
            apply_new_locks();
            drain_completions();
            take_new_commands();
          }
          if (!commands.empty()) {
            expire_commands();
            send_waiting_commands();
          }
          if (coap_io_process(ctx, COAP_IO_NO_WAIT) < 0)
            return true;
          if (!untrimmed.empty())
            trim_write_buffers();
          if (!decided.empty())
            report_decisions();
          if (!handshakes.empty())
            check_handshakes();
          // (Before releasing more: libcoap frees the sessions released in
          // the last pass in this pass's coap_io_process.)
          return_freed_memory();
          release_idle_sessions();
          return false;
        },
        [] { return false; });
      if (io_failed) {
        spdlog::error("coap: libcoap's I/O loop failed");
        break;
      }
    }
  }
};

coap_server::coap_server(coap_server_config cfg)
  : impl_(std::make_unique<impl>()) {
  std::call_once(libcoap_started, [] {
    coap_startup();
    coap_set_log_handler(route_libcoap_logs);
    coap_set_log_level(LOG_WARNING);
    coap_dtls_set_log_level(LOG_WARNING);
  });
  auto& in = *impl_;
  in.cfg = std::move(cfg);
  in.on_events = in.cfg.handlers.on_events;
  for (const auto& l : in.cfg.locks) {
    auto& e = in.locks[l.id];
    e.id = l.id;
    e.psk = l.psk;
  }
  for (auto& [id, e] : in.locks)
    e.psk_bin = coap_bin_const_t{e.psk.size(), e.psk.data()};
  in.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (in.wake_fd < 0)
    throw std::runtime_error{"coap: cannot create eventfd"};
  in.ctx = coap_new_context(nullptr);
  if (in.ctx == nullptr)
    throw std::runtime_error{"coap: cannot create libcoap context"};
  {
    std::lock_guard guard{registry_mutex};
    registry[in.ctx] = &in;
  }
  coap_context_set_block_mode(in.ctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
  // A session released after idle_release_s is already that quiet, so
  // libcoap frees it at its next check; stale sessions nobody references are
  // never kept longer than libcoap's default 300 s.
  if (in.cfg.idle_release_s > 0)
    coap_context_set_session_timeout(in.ctx, std::min<unsigned>(in.cfg.idle_release_s, 300));
  // libcoap keeps at most 100 sessions in a DTLS handshake by default and
  // drops the oldest when one more starts: a thousand locks connecting at
  // once then evict each other's handshakes and wait for DTLS retransmissions
  // (1, 2, 4 s...), most of them several times. max_sessions bounds them.
  coap_context_set_max_handshake_sessions(in.ctx, in.cfg.max_sessions);
  coap_register_event_handler(in.ctx, &impl::on_event);
  coap_register_response_handler(in.ctx, &impl::on_response);
  coap_register_nack_handler(in.ctx, &impl::on_nack);
  if (!in.cfg.dtls_listen.empty()) {
    if (!coap_dtls_is_supported())
      throw std::runtime_error{"coap: this libcoap has no DTLS support"};
    coap_dtls_spsk_t setup{};
    setup.version = COAP_DTLS_SPSK_SETUP_VERSION;
    setup.validate_id_call_back = &impl::on_identity;
    setup.id_call_back_arg = &in;
    if (!coap_context_set_psk2(in.ctx, &setup))
      throw std::runtime_error{"coap: cannot set up DTLS-PSK"};
  }
  auto bind = [&](const config::listen_address& a, coap_proto_t proto, const char* what) {
    auto addr = to_address(a);
    if (coap_new_endpoint(in.ctx, &addr, proto) == nullptr)
      throw std::runtime_error{std::string{"coap: cannot listen for "} + what + " on " + a.host
                               + ":" + std::to_string(a.port)
                               + " (address in use or not local?)"};
    enlarge_receive_buffer(addr, a.host + ":" + std::to_string(a.port),
                           static_cast<int>(in.cfg.receive_buffer_kb * 1024));
    spdlog::info("coap: listening for {} on {}:{}", what, a.host, a.port);
  };
  for (const auto& a : in.cfg.dtls_listen)
    bind(a, COAP_PROTO_DTLS, "CoAP over DTLS");
  for (const auto& a : in.cfg.plain_listen) {
    spdlog::warn("coap: PLAIN CoAP (no encryption, no lock authentication) on {}:{}; "
                 "development only", a.host, a.port);
    bind(a, COAP_PROTO_UDP, "plain CoAP");
  }
  auto events = coap_resource_init(coap_make_str_const("v1/events"), 0);
  coap_resource_set_userdata(events, &in);
  coap_register_handler(events, COAP_REQUEST_POST, &impl::on_events_request);
  coap_add_resource(in.ctx, events);
  auto time = coap_resource_init(coap_make_str_const("v1/time"), 0);
  coap_register_handler(time, COAP_REQUEST_GET, &impl::on_time_request);
  coap_resource_set_userdata(time, &in);
  coap_add_resource(in.ctx, time);
  auto access = coap_resource_init(coap_make_str_const("v1/access"), 0);
  coap_register_handler(access, COAP_REQUEST_POST, &impl::on_access_request);
  coap_resource_set_userdata(access, &in);
  coap_add_resource(in.ctx, access);
}

coap_server::~coap_server() {
  stop();
}

void coap_server::start() {
  impl_->running = true;
  impl_->thread = std::thread{[this] {
    ::pthread_setname_np(::pthread_self(), "lockbridge.coap");
    // Locks wait on this thread's answers (an access decision is made here).
    prefer_this_thread("coap: the I/O thread");
    impl_->loop();
  }};
}

void coap_server::stop() {
  if (!impl_->thread.joinable())
    return;
  impl_->running = false;
  std::uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(impl_->wake_fd, &one, sizeof one);
  impl_->thread.join();
}

void coap_server::complete(request_id id, events_reply reply) {
  impl_->enqueue_reply(id, std::move(reply));
}

void coap_server::send_command(const std::string& lock, std::vector<std::uint8_t> body,
                               std::chrono::steady_clock::time_point deadline,
                               command_callback done) {
  {
    std::lock_guard guard{impl_->queue_mutex};
    impl::outgoing_command c;
    c.lock = lock;
    c.body = std::move(body);
    c.deadline = deadline;
    c.done = std::move(done);
    impl_->new_commands.push_back(std::move(c));
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(impl_->wake_fd, &one, sizeof one);
}

void coap_server::set_locks(std::vector<coap_lock> locks) {
  {
    std::lock_guard guard{impl_->queue_mutex};
    impl_->new_locks = std::move(locks);
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(impl_->wake_fd, &one, sizeof one);
}

const coap_counters& coap_server::counters() const noexcept {
  return impl_->counters;
}

std::map<std::string, std::int64_t, std::less<>> coap_server::last_seen() const {
  std::lock_guard guard{impl_->seen_mutex};
  return impl_->seen;
}

refusal_report coap_server::refusals() const {
  return impl_->refusals.report();
}

} // namespace lockbridge::transport
