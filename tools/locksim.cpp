// lockbridge-locksim: plays N door locks against a gateway over CoAP/DTLS-PSK
// (libcoap), as real locks behave: each lock numbers its events, keeps every
// event until the gateway acknowledges it, retries on timeout or 5.03 (after
// Max-Age), and never sends more than one request at a time. Prints progress
// to stderr and a JSON report on stdout at the end.

#include <arpa/inet.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <CLI/CLI.hpp>
#include <coap3/coap.h>
#include <nlohmann/json.hpp>

#include "config/secrets.hpp"
#include "protocols/lock_commands.hpp"
#include "protocols/lock_messages.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using lockbridge::protocol::lock_event;

volatile std::sig_atomic_t stop_requested = 0;

struct options {
  std::string gateway = "127.0.0.1:5684";
  bool plain = false;
  int locks = 5;
  std::string prefix = "lock-";
  int first_lock = 1;
  std::string psk_dir;
  std::uint64_t events_per_lock = 100;
  double rate = 10;          // events per second per lock; 0 = as fast as acknowledged
  std::size_t batch = 10;    // events per request at most
  int timeout_ms = 3000;
  double duration_s = 120;   // give up after this long
  int max_backoff_ms = 2000; // cap on Max-Age waits (tests)
  std::uint64_t start_seq = 1;
  bool with_creds = true;
  std::string acked_file;    // write per-lock acked seq here as events are acknowledged
  std::uint64_t access_creds = 0;  // > 0: ask POST /v1/access instead of sending events
  std::string access_prefix = "B"; // credentials are <prefix><8-digit index below access_creds>
  std::string access_door = "door-01";
  double linger_s = 0;                // after the events: keep the sessions, answer commands
  std::string command_answer = "done"; // done | refused | failed: how commands are answered
  int hostile_states = 0; // the first N state answers per lock claim a 2^64-1-item array (tests)
  int reopen_pause_ms = 200; // after the gateway closed or refused a session
  bool quiet_states = false;  // door events do not change the observable state (scale runs)
  bool spread = false;        // locks' events spread over the period instead of in step
  double burst_at_s = 0;      // at this time, every lock gets `burst` more events at once
  std::uint64_t burst = 0;
  std::string latency_file;   // every acknowledged request: when it was sent, how long it took
};

struct lock_state {
  std::string id;
  lockbridge::protocol::lock_state own{true, false, 95, "sim-1.0"}; ///< GET /v1/state
  std::vector<std::uint8_t> psk;
  coap_session_t* session = nullptr;
  std::deque<lock_event> pending;
  std::uint64_t next_seq = 1;
  std::uint64_t generated = 0;
  std::uint64_t acked_seq = 0;
  bool in_flight = false;
  std::vector<std::uint8_t> token;
  std::size_t sent_count = 0;
  clock_type::time_point sent_at;
  clock_type::time_point resume_at;
  std::uint64_t retries = 0;
  bool reopen = false; ///< open a new session from the main loop (never inside a callback)
  std::uint64_t refused_full = 0;
  std::uint64_t errors = 0;
  std::string last_error;
  int hostile_states_sent = 0;
  std::uint64_t closed_by_gateway = 0; ///< DTLS close_notify from the gateway
  std::uint64_t session_failures = 0;  ///< handshakes that failed (refused)
  clock_type::time_point first_ack{};  ///< when the lock was first served
  std::uint64_t regular = 0;           ///< events generated at --rate (not the burst)
  double phase = 0;                    ///< --spread: fraction of a period its events lag
  std::uint64_t on_session = 0;        ///< requests sent on the current session
  bool first_on_session = false;       ///< the request in flight waited for a handshake
  bool burst_done = false;
};

options opt;
std::vector<lock_state> locks;
std::vector<double> latencies_us;
/// When each acknowledged request was sent (s since start), beside latencies_us.
std::vector<double> sent_at_s;
/// Latencies of requests that did not open their session (no handshake in them).
std::vector<double> warm_latencies_us;
clock_type::time_point started_at;
coap_context_t* ctx = nullptr;
coap_address_t dst;
std::uint64_t sessions_opened = 0;
std::uint64_t access_allowed = 0;
std::uint64_t access_denied = 0;
std::minstd_rand access_rng{12345};

lock_state* lock_of(coap_session_t* s) {
  return static_cast<lock_state*>(coap_session_get_app_data(s));
}

/// Sessions replaced by a new one, kept referenced until libcoap can no
/// longer be retransmitting on them. libcoap 4.3.1's send queue holds its
/// own reference to a session with a CON in flight; if the application's
/// reference is gone, the queue's last release frees the session in the
/// middle of coap_io_prepare_io, which goes on using it (use after free,
/// seen under valgrind; SIGSEGV or the `ssl != NULL` assertion when the
/// gateway was killed repeatedly). Released from the main loop only.
///
struct retired_session {
  coap_session_t* session;
  std::chrono::steady_clock::time_point at;
};
std::deque<retired_session> retired;
/// Longer than CoAP's MAX_TRANSMIT_WAIT (93 s with the default parameters).
constexpr auto retire_for = std::chrono::seconds{100};

void release_retired(bool all) {
  auto now = std::chrono::steady_clock::now();
  while (!retired.empty() && (all || now - retired.front().at > retire_for)) {
    coap_session_release(retired.front().session);
    retired.pop_front();
  }
}

/// The lock each replaced session belonged to. A replaced session may still
/// carry the gateway's observation of v1/state (the observation holds its
/// own reference, so the session outlives our release of it), and libcoap
/// keeps notifying it. Those notifications are answered with the lock's
/// state, never with an error: libcoap 4.3.1 ends an observation whose
/// notification is an error response by freeing the subscription in the
/// middle of its walk over the resource's observers, then reads the freed
/// entry (coap_notify_observers; it crashed the simulator in the soak's
/// gateway-kill phase). Observations on dead peers end by themselves after
/// COAP_OBS_MAX_FAIL unanswered notifications, outside that walk. Entries
/// are never erased but overwritten when libcoap reuses the address for a
/// new session (whose app data then names its lock first).
std::unordered_map<coap_session_t*, lock_state*> former_owner;

/// The lock whose state a session's observer sees.
lock_state* state_owner(coap_session_t* s) {
  if (auto l = lock_of(s))
    return l;
  auto it = former_owner.find(s);
  return it == former_owner.end() ? nullptr : it->second;
}

void open_session(lock_state& l) {
  if (l.session != nullptr) {
    coap_session_set_app_data(l.session, nullptr);
    retired.push_back({l.session, std::chrono::steady_clock::now()});
    former_owner[l.session] = &l;
    l.session = nullptr;
  }
  if (opt.plain) {
    l.session = coap_new_client_session(ctx, nullptr, &dst, COAP_PROTO_UDP);
  } else {
    coap_dtls_cpsk_t setup{};
    setup.version = COAP_DTLS_CPSK_SETUP_VERSION;
    setup.psk_info.identity = {l.id.size(), reinterpret_cast<const std::uint8_t*>(l.id.data())};
    setup.psk_info.key = {l.psk.size(), l.psk.data()};
    l.session = coap_new_client_session_psk2(ctx, nullptr, &dst, COAP_PROTO_DTLS, &setup);
  }
  if (l.session == nullptr) {
    // Out of descriptors or ports (thousands of locks, each retry a new
    // socket): tried again in a second, as a lock would.
    static std::uint64_t failures = 0;
    if (failures++ % 1000 == 0)
      std::cerr << "locksim: cannot create a session for " << l.id << " (" << failures
                << " such failures); trying again\n";
    l.reopen = true;
    l.in_flight = false;
    l.resume_at = clock_type::now() + std::chrono::seconds{1};
    return;
  }
  ++sessions_opened;
  l.on_session = 0;
  former_owner.erase(l.session);
  coap_session_set_app_data(l.session, &l);
}

/// POSTs a CBOR body to /v1/<resource> as the lock's one request in flight.
void post(lock_state& l, const char* resource, const std::vector<std::uint8_t>& body,
          std::size_t events) {
  auto pdu = coap_pdu_init(COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST,
                           coap_new_message_id(l.session), coap_session_max_pdu_size(l.session));
  std::uint8_t token[8];
  std::size_t token_len = 0;
  coap_session_new_token(l.session, &token_len, token);
  coap_add_token(pdu, token_len, token);
  coap_add_option(pdu, COAP_OPTION_URI_PATH, 2, reinterpret_cast<const std::uint8_t*>("v1"));
  coap_add_option(pdu, COAP_OPTION_URI_PATH, std::strlen(resource),
                  reinterpret_cast<const std::uint8_t*>(resource));
  std::uint8_t fmt[4];
  coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                  coap_encode_var_safe(fmt, sizeof fmt, COAP_MEDIATYPE_APPLICATION_CBOR), fmt);
  if (opt.plain) {
    auto q = "lock=" + l.id;
    coap_add_option(pdu, COAP_OPTION_URI_QUERY, q.size(), reinterpret_cast<const std::uint8_t*>(q.data()));
  }
  coap_add_data(pdu, body.size(), body.data());
  l.token.assign(token, token + token_len);
  l.sent_count = events;
  l.sent_at = clock_type::now();
  l.in_flight = true;
  l.first_on_session = l.on_session++ == 0;
  if (coap_send(l.session, pdu) == COAP_INVALID_MID) {
    l.in_flight = false;
    l.resume_at = clock_type::now() + std::chrono::milliseconds{100};
  }
}

/// Access mode: one query per pending item, for a credential drawn at random.
void send_access(lock_state& l) {
  char cred[64];
  std::snprintf(cred, sizeof cred, "%s%08llu", opt.access_prefix.c_str(),
                static_cast<unsigned long long>(access_rng() % opt.access_creds));
  auto body = nlohmann::json::to_cbor(nlohmann::json{
    {"cred", cred}, {"door", opt.access_door}, {"ts", l.pending.front().ts}});
  post(l, "access", body, 1);
}

void send_batch(lock_state& l) {
  if (opt.access_creds > 0) {
    send_access(l);
    return;
  }
  auto count = std::min(opt.batch, l.pending.size());
  lockbridge::protocol::event_batch batch;
  std::vector<std::uint8_t> body;
  // A request must fit one datagram (no block-wise transfer): shrink the
  // batch until it does, as a lock with a small MTU would.
  auto room = coap_session_max_pdu_size(l.session) - 64;
  for (;;) {
    batch.events.assign(l.pending.begin(), l.pending.begin() + static_cast<long>(count));
    body = lockbridge::protocol::encode_event_batch(batch);
    if (body.size() <= room || count == 1)
      break;
    count = std::max<std::size_t>(1, count * room / body.size());
  }
  post(l, "events", body, count);
}

coap_response_t on_response_body(coap_session_t* session, const coap_pdu_t* received) {
  auto l = lock_of(session);
  if (l == nullptr)
    return COAP_RESPONSE_OK;
  auto token = coap_pdu_get_token(received);
  if (!l->in_flight || token.length != l->token.size()
      || !std::equal(l->token.begin(), l->token.end(), token.s))
    return COAP_RESPONSE_OK; // stale answer to a request already retried
  l->in_flight = false;
  auto now = clock_type::now();
  auto code = coap_pdu_get_code(received);
  std::size_t size = 0;
  const std::uint8_t* data = nullptr;
  coap_get_data(received, &size, &data);
  // An answered request: its latency, when it was sent, and (after the
  // session's first, which waited for the handshake) its warm latency.
  auto record_latency = [&] {
    latencies_us.push_back(std::chrono::duration<double, std::micro>(now - l->sent_at).count());
    sent_at_s.push_back(std::chrono::duration<double>(l->sent_at - started_at).count());
    if (!l->first_on_session)
      warm_latencies_us.push_back(latencies_us.back());
  };
  if (opt.access_creds > 0 && code == COAP_RESPONSE_CODE_CONTENT) {
    auto answer = nlohmann::json::from_cbor(data, data + size, true, false);
    if (answer.is_discarded() || !answer.contains("allow") || !answer["allow"].is_boolean()) {
      ++l->errors;
      l->last_error = "bad access answer";
      return COAP_RESPONSE_OK;
    }
    ++(answer["allow"].get<bool>() ? access_allowed : access_denied);
    record_latency();
    l->acked_seq = l->pending.front().seq;
    l->pending.pop_front();
  } else if (code == COAP_RESPONSE_CODE_CHANGED) {
    auto ack = lockbridge::protocol::decode_events_ack({data, size});
    if (!ack) {
      ++l->errors;
      l->last_error = "bad ack: " + ack.error().to_string();
      return COAP_RESPONSE_OK;
    }
    record_latency();
    if (l->acked_seq < opt.start_seq)
      l->first_ack = now;
    l->acked_seq = std::max(l->acked_seq, *ack);
    while (!l->pending.empty() && l->pending.front().seq <= l->acked_seq)
      l->pending.pop_front();
  } else if (code == COAP_RESPONSE_CODE_SERVICE_UNAVAILABLE) {
    ++l->refused_full;
    std::uint32_t max_age = 60;
    coap_opt_iterator_t it;
    if (auto o = coap_check_option(received, COAP_OPTION_MAXAGE, &it))
      max_age = coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o));
    auto wait = std::min<std::int64_t>(max_age * 1000ll, opt.max_backoff_ms);
    l->resume_at = now + std::chrono::milliseconds{wait};
  } else {
    ++l->errors;
    l->last_error = std::to_string(COAP_RESPONSE_CLASS(code)) + "."
                    + std::to_string(code & 0x1f) + " "
                    + std::string(reinterpret_cast<const char*>(data), size);
    std::cerr << "locksim: " << l->id << " got " << l->last_error << "\n";
    l->resume_at = now + std::chrono::milliseconds{500};
  }
  return COAP_RESPONSE_OK;
}

/// The gateway ended the session (it released an idle one, or refused the
/// handshake): the main loop opens a new one when the lock has something to
/// send, after a pause so a refused lock does not hammer the gateway.
int on_event(coap_session_t* session, const coap_event_t event) {
  if (event != COAP_EVENT_DTLS_CLOSED && event != COAP_EVENT_DTLS_ERROR
      && event != COAP_EVENT_SESSION_CLOSED)
    return 0;
  if (auto l = lock_of(session); l != nullptr && l->session == session) {
    if (event == COAP_EVENT_DTLS_CLOSED)
      ++l->closed_by_gateway;
    else
      ++l->session_failures;
    l->in_flight = false;
    l->reopen = true;
    l->resume_at = clock_type::now() + std::chrono::milliseconds{opt.reopen_pause_ms};
  }
  return 0;
}

void on_nack(coap_session_t* session, const coap_pdu_t*, const coap_nack_reason_t, const coap_mid_t) {
  if (auto l = lock_of(session)) {
    l->in_flight = false;
    ++l->retries;
    l->resume_at = clock_type::now() + std::chrono::milliseconds{200};
    // Not here: libcoap is inside this session's processing, and releasing
    // it now frees what libcoap is about to use (it crashed when the gateway
    // was killed mid-handshake). The main loop opens a new one.
    l->reopen = true;
  }
}

coap_resource_t* state_resource = nullptr;

/// Answers with `code` and a CBOR body.
void answer_cbor(coap_pdu_t* response, coap_pdu_code_t code,
                 const std::vector<std::uint8_t>& body) {
  coap_pdu_set_code(response, code);
  std::uint8_t format[4];
  coap_add_option(response, COAP_OPTION_CONTENT_FORMAT,
                  coap_encode_var_safe(format, sizeof format, COAP_MEDIATYPE_APPLICATION_CBOR),
                  format);
  coap_add_data(response, body.size(), body.data());
}

/// GET /v1/state (observable): the lock's own state. libcoap keeps the
/// gateway's observation and calls this again for each notification.
void on_state(coap_resource_t*, coap_session_t* session, const coap_pdu_t*,
              const coap_string_t*, coap_pdu_t* response) {
  auto lock = state_owner(session);
  if (lock == nullptr) {
    // Not a session of ours (every session is opened by open_session and
    // named in former_owner once replaced): cannot happen.
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_NOT_FOUND);
    return;
  }
  if (lock->hostile_states_sent < opt.hostile_states) {
    // An array header that claims 2^64-1 items, and nothing after it.
    ++lock->hostile_states_sent;
    answer_cbor(response, COAP_RESPONSE_CODE_CONTENT,
                {0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
    return;
  }
  answer_cbor(response, COAP_RESPONSE_CODE_CONTENT,
              lockbridge::protocol::encode_lock_state(lock->own));
}

/// The lock's state changed: notify whoever observes it.
void state_changed() {
  if (state_resource != nullptr)
    coap_resource_notify_observers(state_resource, nullptr);
}

/// The commands the gateway sent (reported at the end).
nlohmann::json commands_received = nlohmann::json::array();

/// POST /v1/commands from the gateway, on a lock's own session: checked,
/// recorded, answered as --command-answer says (never acted on after expiry).
void on_command(coap_resource_t*, coap_session_t* session, const coap_pdu_t* request,
                const coap_string_t*, coap_pdu_t* response) {
  auto sim = lock_of(session);
  std::string lock = sim != nullptr ? sim->id : "?";
  std::size_t len = 0;
  const std::uint8_t* data = nullptr;
  coap_get_data(request, &len, &data);
  auto c = lockbridge::protocol::decode_lock_request({data, len});
  if (!c) {
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_BAD_REQUEST);
    return;
  }
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  lockbridge::protocol::lock_answer a{c->id, opt.command_answer, std::nullopt};
  if (c->expires_at <= now) {
    a.result = "refused";
    a.detail = "expired";
  }
  if (a.result == "done" && sim != nullptr) {
    using lockbridge::protocol::lock_op;
    sim->own.locked = c->op == lock_op::lock || c->op == lock_op::passage_off;
    state_changed();
  }
  commands_received.push_back({{"lock", lock},
                               {"id", c->id},
                               {"op", lockbridge::protocol::to_string(c->op)},
                               {"result", a.result}});
  std::cerr << "locksim: " << lock << ": command " << c->id << " "
            << lockbridge::protocol::to_string(c->op) << " -> " << a.result << "\n";
  answer_cbor(response, COAP_RESPONSE_CODE_CHANGED, lockbridge::protocol::encode_lock_answer(a));
}

std::uint64_t target_events() {
  return opt.events_per_lock + opt.burst;
}

void generate(lock_state& l, double elapsed_s) {
  // The first event at once, the next ones every 1/rate s, shifted by the
  // lock's phase (--spread) so that a thousand locks do not speak in step.
  std::uint64_t due = opt.rate <= 0 ? opt.events_per_lock
                                    : std::min<std::uint64_t>(
                                        opt.events_per_lock,
                                        static_cast<std::uint64_t>(
                                          std::max(0.0, elapsed_s * opt.rate - l.phase)) + 1);
  std::uint64_t extra = 0;
  if (opt.burst > 0 && !l.burst_done && elapsed_s >= opt.burst_at_s) {
    l.burst_done = true;
    extra = opt.burst;
  }
  // Bound what is generated ahead of acknowledgements, as a lock's memory would.
  while ((l.regular < due || extra > 0) && l.pending.size() < 10000) {
    if (l.regular < due)
      ++l.regular;
    else
      --extra;
    lock_event ev;
    ev.seq = l.next_seq++;
    ev.ts = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count();
    static const char* types[] = {"access_granted", "door_open", "door_close", "access_denied"};
    ev.type = types[ev.seq % 4];
    ev.door = "door-" + l.id.substr(l.id.size() - 2);
    if (opt.with_creds && (ev.seq % 4 == 0 || ev.seq % 4 == 3))
      ev.cred = "CARD-" + l.id + "-" + std::to_string(ev.seq % 50);
    if (!opt.quiet_states && (ev.type == "door_open" || ev.type == "door_close")) {
      l.own.door_open = ev.type == "door_open";
      state_changed();
    }
    l.pending.push_back(std::move(ev));
    ++l.generated;
  }
}

void write_acked() {
  if (opt.acked_file.empty())
    return;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& l : locks)
    j[l.id] = l.acked_seq;
  auto tmp = opt.acked_file + ".tmp";
  std::ofstream{tmp} << j.dump();
  std::rename(tmp.c_str(), opt.acked_file.c_str());
}

} // namespace

/// libcoap's response handler: nothing may unwind through libcoap's frames
/// (an allocation that fails, a JSON access on an answer of the wrong shape):
/// counted as one of the lock's errors instead.
coap_response_t on_response(coap_session_t* session, const coap_pdu_t*, const coap_pdu_t* received,
                            const coap_mid_t) noexcept {
  try {
    return on_response_body(session, received);
  } catch (...) {
    if (auto l = lock_of(session))
      ++l->errors;
  }
  return COAP_RESPONSE_OK;
}

int main(int argc, char** argv) {
  CLI::App app{"lockbridge-locksim: simulated door locks speaking lock protocol v1"};
  app.add_option("--gateway", opt.gateway, "gateway host:port")->capture_default_str();
  app.add_flag("--plain", opt.plain, "plain CoAP (development gateways only)");
  app.add_option("--locks", opt.locks, "number of locks")->capture_default_str()->check(CLI::Range(1, 10000));
  app.add_option("--prefix", opt.prefix, "lock id prefix")->capture_default_str();
  app.add_option("--first-lock", opt.first_lock, "number of the first lock")->capture_default_str();
  app.add_option("--psk-dir", opt.psk_dir, "directory with <lock-id>.psk files");
  app.add_option("--events", opt.events_per_lock, "events per lock")->capture_default_str();
  app.add_option("--rate", opt.rate, "events/s per lock (0: as fast as acknowledged)")->capture_default_str();
  app.add_option("--batch", opt.batch, "events per request at most")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--timeout-ms", opt.timeout_ms, "retry a request after this")->capture_default_str();
  app.add_option("--duration", opt.duration_s, "give up after this many seconds")->capture_default_str();
  app.add_option("--max-backoff-ms", opt.max_backoff_ms, "cap on Max-Age waits")->capture_default_str();
  app.add_option("--start-seq", opt.start_seq, "first seq of every lock")->capture_default_str();
  app.add_option("--acked-file", opt.acked_file, "keep per-lock acked seq in this JSON file");
  app.add_option("--access-creds", opt.access_creds,
                 "ask POST /v1/access (at --rate per lock) for credentials drawn from this many "
                 "instead of sending events");
  app.add_option("--access-prefix", opt.access_prefix, "credential id prefix (access mode)")
    ->capture_default_str();
  app.add_option("--access-door", opt.access_door, "door asked for (access mode)")
    ->capture_default_str();
  bool no_creds = false;
  app.add_flag("--no-creds", no_creds, "send no credential identifiers");
  app.add_option("--linger", opt.linger_s,
                 "after the events, keep the sessions this many seconds and answer commands")
    ->capture_default_str();
  app.add_option("--command-answer", opt.command_answer, "how commands are answered")
    ->check(CLI::IsMember({"done", "refused", "failed"}))
    ->capture_default_str();
  app.add_option("--hostile-states", opt.hostile_states,
                 "answer the first N state requests and notifications of each lock with an "
                 "array header claiming 2^64-1 items (a hostile lock, for tests)")
    ->capture_default_str()
    ->check(CLI::Range(0, 1000));
  app.add_option("--reopen-pause-ms", opt.reopen_pause_ms,
                 "wait this long before a new session when the gateway closed or refused one")
    ->capture_default_str()
    ->check(CLI::Range(0, 60000));
  app.add_option("--burst-at", opt.burst_at_s,
                 "at this many seconds, every lock gets --burst more events at once")
    ->capture_default_str();
  app.add_option("--burst", opt.burst, "events per lock in the burst")->capture_default_str();
  app.add_option("--latency-file", opt.latency_file,
                 "write every acknowledged request's send time (s) and latency (us) here");
  app.add_flag("--spread", opt.spread,
               "after the first event, spread the locks' events evenly over each period of "
               "1/rate s instead of all locks sending together");
  app.add_flag("--quiet-states", opt.quiet_states,
               "door events leave the observable state alone (no notification per event: a "
               "thousand simulated locks share one state resource)");
  CLI11_PARSE(app, argc, argv);
  opt.with_creds = !no_creds;

  std::signal(SIGINT, [](int) { stop_requested = 1; });
  std::signal(SIGTERM, [](int) { stop_requested = 1; });

  // One UDP socket per simulated lock: thousands need more descriptors than
  // the usual soft limit.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  coap_startup();
  coap_set_log_level(LOG_ERR);
  coap_dtls_set_log_level(LOG_CRIT);
  auto colon = opt.gateway.rfind(':');
  auto host = opt.gateway.substr(0, colon);
  if (host.starts_with("["))
    host = host.substr(1, host.size() - 2);
  coap_address_init(&dst);
  auto port = static_cast<std::uint16_t>(std::stoi(opt.gateway.substr(colon + 1)));
  if (inet_pton(AF_INET, host.c_str(), &dst.addr.sin.sin_addr) == 1) {
    dst.addr.sin.sin_family = AF_INET;
    dst.addr.sin.sin_port = htons(port);
    dst.size = sizeof(dst.addr.sin);
  } else if (inet_pton(AF_INET6, host.c_str(), &dst.addr.sin6.sin6_addr) == 1) {
    dst.addr.sin6.sin6_family = AF_INET6;
    dst.addr.sin6.sin6_port = htons(port);
    dst.size = sizeof(dst.addr.sin6);
  } else {
    std::cerr << "locksim: --gateway needs a numeric address\n";
    return 2;
  }
  ctx = coap_new_context(nullptr);
  coap_register_response_handler(ctx, on_response);
  coap_register_nack_handler(ctx, on_nack);
  coap_register_event_handler(ctx, on_event);
  // The gateway sends lock commands on the lock's own session.
  auto commands = coap_resource_init(coap_make_str_const("v1/commands"), 0);
  coap_register_handler(commands, COAP_REQUEST_POST, on_command);
  coap_add_resource(ctx, commands);
  state_resource = coap_resource_init(coap_make_str_const("v1/state"), 0);
  coap_register_handler(state_resource, COAP_REQUEST_GET, on_state);
  coap_resource_set_get_observable(state_resource, 1);
  coap_add_resource(ctx, state_resource);

  locks.resize(static_cast<std::size_t>(opt.locks));
  for (int i = 0; i < opt.locks; ++i) {
    auto& l = locks[static_cast<std::size_t>(i)];
    char id[64];
    std::snprintf(id, sizeof id, "%s%02d", opt.prefix.c_str(), opt.first_lock + i);
    l.id = id;
    l.next_seq = opt.start_seq;
    if (opt.spread)
      l.phase = static_cast<double>(i) / opt.locks;
    if (!opt.plain) {
      auto psk = lockbridge::config::read_psk(opt.psk_dir + "/" + l.id + ".psk");
      if (!psk) {
        std::cerr << "locksim: " << psk.error().to_string() << "\n";
        return 2;
      }
      l.psk = *psk;
    }
    open_session(l);
  }

  auto start = clock_type::now();
  started_at = start;
  auto last_report = start;
  for (;;) {
    auto now = clock_type::now();
    double elapsed = std::chrono::duration<double>(now - start).count();
    bool all_done = true;
    for (auto& l : locks) {
      generate(l, elapsed);
      if (l.in_flight && now - l.sent_at > std::chrono::milliseconds{opt.timeout_ms}) {
        // No answer: the gateway may be down or restarting. Start afresh.
        l.in_flight = false;
        ++l.retries;
        l.reopen = true;
      }
      // A session the gateway ended is made again when there is something
      // to send, as a quiet lock would.
      if (l.reopen && now >= l.resume_at && !l.pending.empty()) {
        l.reopen = false;
        open_session(l);
      }
      release_retired(false);
      if (!l.in_flight && !l.reopen && !l.pending.empty() && now >= l.resume_at)
        send_batch(l);
      all_done = all_done && l.generated >= target_events() && l.pending.empty();
    }
    if (now - last_report > std::chrono::seconds{1}) {
      write_acked();
      std::uint64_t acked = 0, generated = 0;
      for (const auto& l : locks) {
        acked += l.acked_seq >= opt.start_seq ? l.acked_seq - opt.start_seq + 1 : 0;
        generated += l.generated;
      }
      std::cerr << "locksim: " << static_cast<int>(elapsed) << " s: " << generated
                << " generated, " << acked << " acknowledged\n";
      last_report = now;
    }
    if (all_done || stop_requested || elapsed > opt.duration_s)
      break;
    coap_io_process(ctx, 1);
  }
  write_acked();
  // Lingering: the sessions stay up (the gateway reaches the locks on them).
  for (auto linger_end = clock_type::now() + std::chrono::milliseconds{
                           static_cast<std::int64_t>(opt.linger_s * 1000)};
       !stop_requested && clock_type::now() < linger_end;)
    coap_io_process(ctx, 100);

  auto elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
  if (!opt.latency_file.empty()) {
    std::ofstream out{opt.latency_file};
    for (std::size_t i = 0; i < latencies_us.size(); ++i)
      out << sent_at_s[i] << ' ' << latencies_us[i] << '\n';
  }
  std::sort(latencies_us.begin(), latencies_us.end());
  auto pct = [&](double p) {
    if (latencies_us.empty())
      return 0.0;
    return latencies_us[std::min(latencies_us.size() - 1,
                                 static_cast<std::size_t>(p * static_cast<double>(latencies_us.size())))];
  };
  nlohmann::json report;
  report["elapsed_s"] = elapsed;
  report["requests_acked"] = latencies_us.size();
  report["latency_us"] = {{"p50", pct(0.50)}, {"p99", pct(0.99)}, {"max", latencies_us.empty() ? 0.0 : latencies_us.back()}};
  {
    // The same without each session's first request, which waited for the
    // DTLS handshake.
    auto& w = warm_latencies_us;
    std::sort(w.begin(), w.end());
    auto at = [&](double p) {
      return w.empty() ? 0.0 : w[std::min(w.size() - 1, static_cast<std::size_t>(p * static_cast<double>(w.size())))];
    };
    report["latency_warm_us"] = {{"n", w.size()}, {"p50", at(0.50)}, {"p99", at(0.99)},
                                 {"max", w.empty() ? 0.0 : w.back()}};
  }
  report["sessions_opened"] = sessions_opened;
  {
    // When every lock was first served (its first batch acknowledged), from
    // the start: the time a site's locks take to be back after a power cut.
    double served_s = 0;
    std::uint64_t closed = 0, failures = 0, served = 0;
    for (const auto& l : locks) {
      closed += l.closed_by_gateway;
      failures += l.session_failures;
      if (l.first_ack != clock_type::time_point{}) {
        ++served;
        served_s = std::max(served_s, std::chrono::duration<double>(l.first_ack - start).count());
      }
    }
    report["locks_served"] = served;
    report["all_served_s"] = served_s;
    report["sessions_closed_by_gateway"] = closed;
    report["session_failures"] = failures;
  }
  if (opt.access_creds > 0)
    report["access"] = {{"allowed", access_allowed}, {"denied", access_denied}};
  bool complete = true;
  for (const auto& l : locks) {
    report["locks"][l.id] = {{"generated", l.generated}, {"acked_seq", l.acked_seq},
                             {"pending", l.pending.size()}, {"retries", l.retries},
                             {"refused_full", l.refused_full}, {"errors", l.errors},
                             {"last_error", l.last_error}};
    complete = complete && l.pending.empty() && l.generated >= target_events();
  }
  report["complete"] = complete;
  report["commands"] = commands_received;
  std::cout << report.dump() << std::endl;
  for (auto& l : locks)
    if (l.session != nullptr)
      coap_session_release(l.session);
  release_retired(true);
  coap_free_context(ctx);
  coap_cleanup();
  return complete ? 0 : 1;
}
