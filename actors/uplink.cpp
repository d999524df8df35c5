#include "actors/uplink.hpp"
#include "actors/uplink_status.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <deque>
#include <random>
#include <utility>

#include <caf/all.hpp>
#include <sys/stat.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/failure.hpp"
#include "protocols/log_fields.hpp"

#include "actors/error.hpp"
#include "actors/results.hpp"
#include "protocols/clock_guard.hpp"
#include "config/tls_check.hpp"
#include "protocols/json_input.hpp"
#include "transports/mqtt_link.hpp"

namespace lockbridge {

namespace {

using protocol::unix_ms_now;

} // namespace

caf::error validate(const uplink_config& cfg) {
  if (!cfg.store || !cfg.journal)
    return caf::make_error(ec::config_invalid, "uplink needs the journal store and its actor");
  if (cfg.mqtt.brokers.empty())
    return caf::make_error(ec::config_invalid, "uplink needs at least one broker");
  if (cfg.mqtt.inflight_window == 0 || cfg.mqtt.max_events_per_message == 0)
    return caf::make_error(ec::config_invalid,
                           "mqtt.inflight_window and max_events_per_message must be positive");
  return caf::none;
}

namespace {

using self_ptr = uplink_actor::stateful_pointer<uplink_state>;

constexpr auto removal_interval = std::chrono::milliseconds{10};
constexpr auto tls_watch_interval = std::chrono::seconds{2};
/// How long a failed attempt waits for its TLS probe's verdict at most (the
/// probe blocks for about twice its 2 s bound, TCP and then TLS).
constexpr auto probe_deadline = std::chrono::seconds{6};
/// How long leaving a connection (for new TLS files) may take before the
/// client is abandoned and a new one made.
constexpr auto leave_deadline = std::chrono::seconds{2};

/// What stat says of the TLS files (device, inode, size, modification and
/// change times): metadata only, which the kernel has cached. The 2 s watch
/// compares this and reads the files' contents only when it differs, so the
/// worker does not read and hash three files every tick.
std::string tls_stamp(const config::mqtt_config& m) {
  std::string out;
  for (const auto& path : {m.ca_file, m.cert_file, m.key_file}) {
    struct stat sb{};
    if (::stat(path.c_str(), &sb) != 0) {
      out += "-;";
      continue;
    }
    out += fmt::format("{}:{}:{}:{}.{}:{}.{};", sb.st_dev, sb.st_ino, sb.st_size,
                       sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec, sb.st_ctim.tv_sec,
                       sb.st_ctim.tv_nsec);
  }
  return out;
}

/// A fingerprint of the TLS files' contents, to notice a rotation in place.
std::size_t tls_fingerprint(const config::mqtt_config& m) {
  std::string all;
  for (const auto& path : {m.ca_file, m.cert_file, m.key_file}) {
    std::ifstream in{path, std::ios::binary};
    all.append(std::istreambuf_iterator<char>{in}, {});
    all.push_back('\0');
  }
  return std::hash<std::string>{}(all);
}

/// Reads when the client certificate ends; warns below 30 days.
void read_cert_expiry(self_ptr self) {
  auto& st = self->state;
  st.cert_expires_at.reset();
  if (auto end = config::certificate_not_after(st.cfg.mqtt.cert_file)) {
    st.cert_expires_at = *end * 1000;
    auto days = (*end * 1000 - unix_ms_now()) / 86400000;
    if (days < static_cast<std::int64_t>(st.cfg.mqtt.cert_warning_days))
      spdlog::warn("uplink: the client certificate {} expires in {} days; have a new one issued "
                   "and reload (the journal keeps events while the broker refuses us)",
                   st.cfg.mqtt.cert_file.string(), days);
  }
}

/// Checks the TLS files in use and says, at most hourly for the same
/// problem, why the cloud cannot be reached with them. The locks are served
/// meanwhile; new files are picked up without a restart (reload_tls).
void check_tls(self_ptr self) {
  auto& st = self->state;
  std::string problem;
  for (const auto& p : config::check_tls_files(st.cfg.mqtt.ca_file, st.cfg.mqtt.cert_file,
                                               st.cfg.mqtt.key_file))
    problem += (problem.empty() ? "" : "; ") + ("mqtt." + p.which + ": " + p.message);
  auto now = unix_ms_now();
  if (problem.empty()) {
    if (!st.tls_problem.empty())
      spdlog::info("uplink: the TLS files are usable again");
  } else if (problem != st.tls_problem || now - st.tls_problem_logged_at >= 3600 * 1000) {
    spdlog::error("uplink: cannot reach the cloud with these TLS files: {}; the locks are served "
                  "offline (events kept, access answered); put usable files in place, no restart "
                  "needed",
                  problem);
    st.tls_problem_logged_at = now;
  }
  st.tls_problem = problem;
}

/// How many publishes each stream may have in Paho's hands at once besides
/// the events window (mqtt.inflight_window): audit batches, command results
/// from the outbox, retained messages. Paho's buffer is sized for their sum.
constexpr std::size_t audit_window_size = 2;
constexpr std::size_t results_window_size = 32;
constexpr std::size_t retained_window_size = 8;

/// Publishes waiting retained messages while their window has room. A
/// message Paho cannot take now stays waiting; the next PUBACK, tick or
/// connection sends it.
void pump_retained(self_ptr self) {
  auto& st = self->state;
  while (st.connected && !st.publishing_paused && !st.retained_waiting.empty()
         && st.retained_flights.size() < retained_window_size) {
    auto it = st.retained_waiting.find(st.retained_order.front());
    auto number = st.next_number++;
    if (auto why = st.link->publish({it->first, it->second, true, std::nullopt}, number)) {
      spdlog::warn("uplink: retained publish on {} not taken now ({}); sent again shortly",
                   it->first, *why);
      return;
    }
    // The status doubles as a probe of the broker while no event is in
    // flight: its PUBACK must come back within the stall bound too.
    if (it->first == st.topics.status()) {
      spdlog::debug("uplink: status published");
      if (st.probe_number == 0) {
        st.probe_number = number;
        st.probe_sent_at = self->clock().now();
      }
    }
    st.retained_flights[number] = {it->first, std::move(it->second)};
    st.retained_waiting.erase(it);
    st.retained_order.pop_front();
  }
}

/// Queues a retained message for `topic`, replacing one still waiting (which
/// keeps its place in the queue).
void publish_retained(self_ptr self, const std::string& topic, std::string payload) {
  auto& st = self->state;
  auto [it, added] = st.retained_waiting.insert_or_assign(topic, std::move(payload));
  if (added)
    st.retained_order.push_back(topic);
  pump_retained(self);
}

/// A retained message that was in flight (its link is gone, or the broker
/// refused it) waits again, first in line, unless a newer one for the same
/// topic already waits.
void requeue_retained(uplink_state& st, uplink_state::retained_flight& f) {
  if (st.retained_waiting.try_emplace(f.topic, std::move(f.payload)).second)
    st.retained_order.push_front(f.topic);
}

void requeue_retained(uplink_state& st) {
  for (auto& [number, f] : st.retained_flights)
    requeue_retained(st, f);
  st.retained_flights.clear();
}

/// Publishes one lock's retained state message (availability, and its own
/// state if it told it), or deletes a removed lock's. Offline nothing goes
/// out; the presence keeps what was not sent (each connection surveys all).
void publish_presence(self_ptr self, const lock_presence::publication& p) {
  auto& st = self->state;
  if (!st.connected)
    return;
  auto now = unix_ms_now();
  st.presence.sent(p, now);
  if (p.clear) {
    publish_retained(self, st.topics.lock_state(p.lock), ""); // deletes it at the broker
    return;
  }
  nlohmann::json doc{{"schema", "lockbridge/lock-state/1"},
                     {"site", st.cfg.site},
                     {"gateway", st.cfg.gateway},
                     {"lock", p.lock},
                     {"available", p.available},
                     {"last_seen", p.last_seen},
                     {"ts", now}};
  if (p.state)
    doc["state"] = {{"locked", p.state->locked},
                    {"door_open", p.state->door_open},
                    {"battery", p.state->battery},
                    {"fw", p.state->fw}};
  publish_retained(self, st.topics.lock_state(p.lock), protocol::dump_safe(doc));
}

/// Publishes each lock whose availability changed, or all of them with
/// `all` (after connecting), and clears removed ones.
void publish_lock_states(self_ptr self, bool all) {
  auto& st = self->state;
  if (!st.cfg.locks_seen)
    return;
  for (const auto& p : st.presence.survey(st.cfg.locks_seen(), unix_ms_now(), all))
    publish_presence(self, p);
}

void publish_status(self_ptr self) {
  auto& st = self->state;
  if (!st.connected)
    return;
  // One still waiting (in flight when the last link dropped) is stale: the
  // fresh one follows as soon as the journal's figures are in.
  if (st.retained_waiting.erase(st.topics.status()) > 0)
    std::erase(st.retained_order, st.topics.status());
  self->request(st.cfg.journal, std::chrono::seconds{5}, atom::figures_v)
    .then(
      [self, s = status_now(self->state)](const journal_figures& f) mutable {
        auto& st = self->state;
        if (!st.connected)
          return;
        s.journal = f;
        add_health(st, s, f, self->clock().now());
        publish_retained(self, st.topics.status(), protocol::encode_status(s));
        spdlog::debug("uplink: status queued ({} events waiting, {} locks heard from)", f.depth,
                      s.health ? s.health->locks_available : 0);
      },
      [](const caf::error& err) {
        spdlog::warn("uplink: journal figures unavailable: {}", caf::to_string(err));
      });
}

/// Publishes a command result, or keeps it (at most 1,000) until connected.
/// Response topics the gateway publishes results on: its own cmd_result or
/// under its own `replies/` (what the broker's ACL lets it write; never its
/// events, status or audit topics).
bool acceptable_response_topic(const uplink_state& st, const std::string& topic) {
  auto replies = st.topics.prefix() + "replies/";
  return topic == st.topics.cmd_result()
         || (topic.starts_with(replies) && topic.size() > replies.size() && topic.size() <= 256
             && topic.find_first_of("+#") == std::string::npos);
}

/// The message carrying a command result: on cmd_result, or for an MQTT 5
/// request on its response topic (if acceptable) with its correlation data.
transport::mqtt_outgoing result_message(const uplink_state& st, const std::string& payload,
                                        const std::optional<uplink_state::reply_route>& route) {
  transport::mqtt_outgoing msg{st.topics.cmd_result(), payload, false, std::nullopt};
  if (!route)
    return msg;
  if (acceptable_response_topic(st, route->topic))
    msg.topic = route->topic;
  msg.correlation = route->correlation; // (a 3.1.1 link sends no properties)
  return msg;
}

/// Where the result of command `id` goes (its MQTT 5 request's response
/// topic and correlation data), if it came with one; a final result ends
/// the route.
std::optional<uplink_state::reply_route> take_route(uplink_state& st, const command_reply& r) {
  auto it = st.reply_routes.find(r.id);
  if (it == st.reply_routes.end())
    return std::nullopt;
  auto route = it->second;
  if (r.final)
    st.reply_routes.erase(it); // answered for good
  return route;
}

/// The route of the result kept in the outbox as `number`, if any.
std::optional<uplink_state::reply_route> route_of(const uplink_state& st, std::uint64_t number) {
  auto it = st.routes_by_number.find(number);
  if (it == st.routes_by_number.end())
    return std::nullopt;
  return it->second;
}

/// Entries of the outbox that do not open: never sent; the journal actor
/// moves them aside, counts and audits it (as the journal's).
void quarantine_results(self_ptr self, const std::vector<std::uint64_t>& damaged) {
  for (auto number : damaged)
    spdlog::error("uplink: command result {} in the outbox does not open (altered or moved); it "
                  "is quarantined and not sent", number);
  self->send(self->state.cfg.journal, atom::quarantine_v, atom::result_v,
             std::make_shared<const std::vector<std::uint64_t>>(damaged));
}

/// Publishes what waits in the outbox, a bounded window at a time; each is
/// removed on its PUBACK, and everything not acknowledged is read again
/// after a reconnection. After a refusal the read starts again at the
/// refused one; results still in flight behind it are not published twice.
void pump_results(self_ptr self) {
  auto& st = self->state;
  constexpr std::size_t window = results_window_size;
  auto& w = st.results_window;
  if (!st.connected || st.publishing_paused || !st.cfg.vault || w.room() == 0)
    return;
  std::vector<store::outbox::entry> entries;
  std::vector<std::uint64_t> damaged;
  try {
    entries = st.cfg.vault->results->read(w.next(), window, &damaged);
  } catch (const std::exception& e) {
    spdlog::error("uplink: cannot read the results waiting: {}", e.what());
    return;
  }
  if (!damaged.empty())
    quarantine_results(self, damaged);
  for (auto& e : entries) {
    if (w.room() == 0)
      return;
    if (w.carries(e.number)) {
      w.skip_to(e.number + 1);
      continue;
    }
    auto number = st.next_number++;
    if (auto why = st.link->publish(result_message(st, e.payload, route_of(st, e.number)),
                                    number)) {
      spdlog::warn("uplink: cmd_result publish failed ({}); sent again after reconnecting",
                   *why);
      return;
    }
    w.sent({number, e.number, e.number, 1, self->clock().now()});
  }
}

/// Results kept in the outbox (waiting for the broker or in flight).
std::uint64_t results_stored(uplink_state& st) {
  if (!st.cfg.vault)
    return 0;
  try {
    return st.cfg.vault->results->size();
  } catch (const std::exception&) {
    return 0;
  }
}

/// A result that could not be stored: published from memory.
void publish_result(self_ptr self, uplink_state::unstored_result r) {
  auto& st = self->state;
  if (st.connected) {
    auto why = st.link->publish(result_message(st, r.payload, r.route), 0);
    if (!why)
      return;
    spdlog::warn("uplink: cmd_result publish failed ({}); kept until reconnected", *why);
  }
  if (st.pending_results.size() >= 1000) {
    spdlog::warn("uplink: more than 1000 command results waiting for the broker; dropping the "
                 "oldest");
    st.pending_results.pop_front();
  }
  st.pending_results.push_back(std::move(r));
}

/// A result kept in the outbox goes out from there, in order, to where its
/// command asked (the route is kept by outbox number, at most 1,000); one
/// the disk refused (number 0) is published from memory.
void on_result(self_ptr self, const command_reply& r) {
  auto& st = self->state;
  auto route = take_route(st, r);
  if (r.number == 0) {
    publish_result(self, {r.payload, std::move(route)});
    return;
  }
  if (route) {
    st.routes_by_number[r.number] = std::move(*route);
    if (st.routes_by_number.size() > 1000)
      st.routes_by_number.erase(st.routes_by_number.begin());
  }
  pump_results(self);
}

/// The link is gone (or left): everything not acknowledged, events and audit
/// records, is read again from the store after the next connection.
void forget_in_flight(uplink_state& st) {
  st.connected = false;
  st.connecting = false;
  st.events_window.rewind();
  st.audit_window.rewind();
  st.results_window.rewind();
  requeue_retained(st);
  st.probe_number = 0;
}

/// Publishes the audit records waiting in the store on `audit` (at most two
/// messages of 100 records in flight); the store removes them once the broker
/// acknowledged them.
void pump_audit(self_ptr self) {
  auto& st = self->state;
  if (!st.connected || !st.cfg.vault || st.publishing_paused)
    return;
  auto& w = st.audit_window;
  while (w.room() > 0) {
    std::vector<std::uint64_t> damaged;
    auto entries = st.cfg.vault->audit->read(w.next(), 100, &damaged);
    for (auto seq : damaged)
      spdlog::error("uplink: audit record {} does not open; `lockbridge audit verify` reports "
                    "the broken link", seq);
    if (!damaged.empty())
      w.skip_to(damaged.back() + 1);
    if (entries.empty())
      return;
    nlohmann::json records = nlohmann::json::array();
    for (const auto& e : entries) {
      auto record = nlohmann::json::parse(e.json, nullptr, false);
      if (record.is_discarded())
        continue;
      record["hash"] = e.hash;
      records.push_back(std::move(record));
    }
    nlohmann::json doc{{"schema", "lockbridge/audit/1"},
                       {"site", st.cfg.site},
                       {"gateway", st.cfg.gateway},
                       {"records", std::move(records)}};
    auto number = st.next_number++;
    if (auto why = st.link->publish(
          {st.topics.audit(), protocol::dump_safe(doc), false, std::nullopt}, number)) {
      spdlog::warn("uplink: audit publish failed ({}); will resend after reconnecting", *why);
      return;
    }
    w.sent({number, entries.front().seq, entries.back().seq, entries.size(),
            self->clock().now()});
  }
}

/// Publishes journal entries while the window has room. One read
/// transaction fetches what the free window can carry; it is then cut into
/// messages of at most max_events_per_message events each.
void pump(self_ptr self) {
  auto& st = self->state;
  const auto per_message = static_cast<std::size_t>(st.cfg.mqtt.max_events_per_message);
  auto& w = st.events_window;
  while (st.connected && !st.publishing_paused && w.room() > 0) {
    std::vector<std::uint64_t> damaged;
    auto entries = st.cfg.store->read(w.next(), w.room() * per_message, &damaged);
    if (!damaged.empty()) {
      // Never sent, never used, never a crash: the journal actor moves
      // them aside, counts and audits it.
      for (auto key : damaged)
        spdlog::error("uplink: journal entry {} does not open (altered or moved); it is "
                      "quarantined and not sent", key);
      self->send(st.cfg.journal, atom::quarantine_v, atom::events_v,
                 std::make_shared<const std::vector<std::uint64_t>>(damaged));
    }
    if (!damaged.empty())
      w.skip_to(damaged.back() + 1);
    if (entries.empty())
      return;
    std::vector<protocol::journal_record> records;
    records.reserve(std::min(per_message, entries.size()));
    for (std::size_t first = 0; first < entries.size(); first += per_message) {
      auto last = std::min(entries.size(), first + per_message);
      records.clear();
      for (auto i = first; i < last; ++i)
        records.push_back(std::move(entries[i].record));
      auto payload = protocol::encode_events(st.cfg.site, st.cfg.gateway, records);
      auto number = st.next_number++;
      auto first_key = entries[first].key;
      auto last_key = entries[last - 1].key;
      if (auto why = st.link->publish(
            {st.topics.events(), std::move(payload), false, std::nullopt}, number)) {
        spdlog::warn("uplink: publish failed ({}); will resend after reconnecting", *why);
        return;
      }
      w.sent({number, first_key, last_key, records.size(), self->clock().now()});
    }
  }
}

void schedule_reconnect(self_ptr self, const std::string& reason);
void leave(self_ptr self);

/// What a refused publish means, said for an installer: the usual cause is
/// a certificate whose CN (the broker's user name under
/// use_identity_as_username) is not gateway.id, or an ACL without this
/// gateway's topics.
std::string refusal_hint(const uplink_state& st) {
  auto cn = config::certificate_common_name(st.cfg.mqtt.cert_file);
  std::string hint;
  if (cn && *cn != st.cfg.gateway)
    hint = "the client certificate's CN is \"" + protocol::printable_text(*cn)
           + "\", not the gateway id \"" + st.cfg.gateway
           + "\" that the shipped ACL expects; have it issued for " + st.cfg.gateway;
  else
    hint = "check that the broker's ACL lets this gateway's user (its certificate's CN) "
           "publish under " + st.topics.prefix();
  return hint;
}

/// A publish failed or was refused: stop publishing for a backoff that
/// doubles from mqtt.reconnect_min_ms to reconnect_max_ms, then send again
/// from the first unacknowledged event (kept in the journal meanwhile).
/// One log line a minute at most, with the reason code and a hint.
void publish_refused(self_ptr self, std::uint64_t number, std::int32_t reason) {
  auto& st = self->state;
  ++st.refused_publishes;
  st.last_refusal_reason = reason;
  auto now = unix_ms_now();
  st.last_refusal_at = now;
  auto min = std::chrono::milliseconds{st.cfg.mqtt.reconnect_min_ms};
  auto max = std::chrono::milliseconds{st.cfg.mqtt.reconnect_max_ms};
  st.refusal_backoff = st.refusal_backoff.count() == 0 ? min : std::min(max, st.refusal_backoff * 2);
  if (now - st.refusal_logged_at >= 60000) {
    spdlog::error("uplink: the broker {} publish {} (reason code 0x{:02x}); events stay in the "
                  "journal and are sent again in {} ms (backing off to {} ms); {}{}",
                  reason >= 0x80 ? "refused" : "did not take", number, reason,
                  st.refusal_backoff.count(), max.count(), refusal_hint(st),
                  st.refusals_unlogged > 0
                    ? fmt::format(" ({} more refusals in the last minute)", st.refusals_unlogged)
                    : std::string{});
    st.refusal_logged_at = now;
    st.refusals_unlogged = 0;
  } else {
    ++st.refusals_unlogged;
  }
  st.events_window.rewind();
  st.audit_window.rewind();
  if (!st.publishing_paused) {
    st.publishing_paused = true;
    self->delayed_send(self, st.refusal_backoff, atom::retry_v);
  }
}

/// Makes the link's client for the current attempt (at start, and in place
/// of one abandoned with what it held).
void new_client(self_ptr self) {
  auto& st = self->state;
  // The client's buffer holds what every window may have in its hands at
  // once, with room for a subscription and the goodbye.
  auto buffered = st.cfg.mqtt.inflight_window + audit_window_size + results_window_size
                  + retained_window_size + 8;
  auto attempt = st.rotation->current();
  st.link->renew(attempt.uri, attempt.v5, buffered, st.cfg.mqtt.client_id);
}

/// Drops a link over which the broker acknowledges nothing (a hung broker:
/// the TCP connection stays open) and makes a new one.
void check_stall(self_ptr self) {
  auto& st = self->state;
  if (!st.connected)
    return;
  auto bound = std::chrono::milliseconds{st.cfg.mqtt.keepalive_s * 1500};
  auto now = self->clock().now();
  auto oldest = st.events_window.oldest_unacked();
  if (st.probe_number != 0 && (!oldest || st.probe_sent_at < *oldest))
    oldest = st.probe_sent_at;
  if (!oldest || now - *oldest < bound)
    return;
  ++st.stalls;
  st.stalled = true;
  spdlog::error("uplink: the broker {} has acknowledged nothing for {} s (1.5 keep-alives); "
                "it hangs: dropping the link and connecting again (events stay in the journal)",
                st.rotation->current().uri,
                std::chrono::duration_cast<std::chrono::seconds>(now - *oldest).count());
  ++st.generation;
  forget_in_flight(st);
  st.rotation->connection_lost(); // a cluster's other node, if there is one
  // Paho cannot be trusted to close a link to a hung broker: its DISCONNECT
  // waits behind writes the broker does not read, and a connect queued
  // meanwhile goes ahead of it (Paho puts connects first), so the stale
  // DISCONNECT then ends the new link. The client is abandoned with all it
  // holds and a new one made; the journal, the outbox and the retained
  // messages waiting have what it held.
  new_client(self);
  // A hung broker would also hang the TLS probe, whose verdict ("the broker
  // may not accept our certificate") would mislead: the cause is known.
  st.first_failure = false;
  schedule_reconnect(self, "stalled");
}

/// Probes the broker of the current attempt with a TCP and TLS handshake
/// (the link does it on a thread of its own: up to 4 s against a loaded
/// broker, never on the CAF worker); the verdict comes back as
/// atom::probed. `decide`: the failed attempt's outcome waits for it.
void probe_broker(self_ptr self, bool decide) {
  auto& st = self->state;
  const auto& m = st.cfg.mqtt;
  st.link->probe(st.generation, st.rotation->current().uri, {m.ca_file, m.cert_file, m.key_file},
                 decide);
  if (decide) {
    // The attempt's outcome waits for the verdict, but never longer than
    // the probe's bound: a probe that ends without answering (or answers
    // late) must not leave the uplink without a next attempt.
    st.verdict_awaited = st.generation;
    self->delayed_send(self, probe_deadline, atom::probed_v, st.generation);
  }
}

/// What follows a failed connect or a lost link: the next attempt (another
/// broker, or MQTT 3.1.1 on the same one with "auto") after a backoff.
/// `answers`: the broker took a TCP and TLS connection.
void after_failure(self_ptr self, bool was_connected, bool answers) {
  auto& st = self->state;
  auto failed = st.rotation->current();
  schedule_reconnect(self, st.last_failure);
  bool moved = was_connected ? st.rotation->connection_lost() : st.rotation->connect_failed(answers);
  auto next = st.rotation->current();
  if (moved)
    spdlog::warn("uplink: the next connect goes to {}, the next broker in mqtt.brokers", next.uri);
  else if (failed.v5 && !next.v5)
    spdlog::warn("uplink: {} takes TLS connections but not an MQTT 5 CONNECT; trying MQTT "
                 "3.1.1 (mqtt.protocol = \"auto\")",
                 failed.uri);
  if (next.uri != failed.uri || next.v5 != failed.v5)
    new_client(self); // a Paho client is made for one server and one version
}

void schedule_reconnect(self_ptr self, const std::string& reason) {
  auto& st = self->state;
  auto min = std::chrono::milliseconds{st.cfg.mqtt.reconnect_min_ms};
  auto max = std::chrono::milliseconds{st.cfg.mqtt.reconnect_max_ms};
  st.backoff = st.backoff.count() == 0 ? min : std::min(max, st.backoff * 2);
  static thread_local std::minstd_rand rng{std::random_device{}()};
  auto jitter = std::chrono::milliseconds{rng() % (st.backoff.count() / 4 + 1)};
  auto delay = st.backoff + jitter;
  if (st.first_failure) {
    // Paho only says "connect failed": find out why, once per streak.
    st.first_failure = false;
    probe_broker(self, false);
  }
  spdlog::warn("uplink: broker {} unavailable ({}); events stay in the journal; retrying in "
               "{} ms",
               st.rotation->current().uri, reason, delay.count());
  self->delayed_send(self, delay, atom::connect_v);
}

void start_connect(self_ptr self) {
  auto& st = self->state;
  if (st.connected || st.connecting || st.leaving != 0)
    return;
  st.connecting = true;
  const auto& m = st.cfg.mqtt;
  transport::mqtt_connect_settings settings;
  settings.tls = {m.ca_file, m.cert_file, m.key_file};
  settings.keepalive_s = m.keepalive_s;
  settings.max_inflight = m.inflight_window + 10;
  settings.will_topic = st.topics.status();
  settings.will_payload = protocol::encode_offline_will(st.cfg.site, st.cfg.gateway);
  // MQTT 5 (the client's version, from the rotation): commands may carry a
  // response topic and correlation data; 3.1.1: results go to cmd_result.
  if (auto why = st.link->connect(++st.generation, settings)) {
    st.connecting = false;
    schedule_reconnect(self, *why);
  }
}

/// Re-reads the CA, certificate and key; if they changed and are usable,
/// leaves the current connection (nothing is lost: unacknowledged events are
/// read again from the journal) and connects with them. Unusable new files
/// are reported once per change and the current connection stays.
void reload_tls(self_ptr self) {
  auto& st = self->state;
  // The stamp first: a change while the files are read shows at the next tick.
  auto stamp = tls_stamp(st.cfg.mqtt);
  if (stamp == st.tls_stamp)
    return;
  st.tls_stamp = std::move(stamp);
  auto fingerprint = tls_fingerprint(st.cfg.mqtt);
  if (fingerprint == st.tls_fingerprint)
    return;
  auto problems = config::check_tls_files(st.cfg.mqtt.ca_file, st.cfg.mqtt.cert_file,
                                          st.cfg.mqtt.key_file);
  if (!problems.empty()) {
    if (fingerprint != st.bad_tls_fingerprint)
      for (const auto& p : problems)
        spdlog::error("uplink: the new TLS files are not usable: mqtt.{}: {}; keeping the "
                      "current connection",
                      p.which, p.message);
    st.bad_tls_fingerprint = fingerprint;
    return;
  }
  st.tls_fingerprint = fingerprint;
  read_cert_expiry(self);
  check_tls(self);
  spdlog::info("uplink: the TLS files changed; reconnecting with them (nothing is lost: "
               "unacknowledged events are sent again)");
  // The record is written by the journal actor (a durable write: not on
  // CAF's shared worker).
  self->send(st.cfg.journal, atom::audit_v, std::string{"tls_reloaded"},
             protocol::dump_safe({{"cert_file", st.cfg.mqtt.cert_file.string()},
                                  {"cert_expires_at", st.cert_expires_at.value_or(0)}}));
  // Leave the current connection as if it were lost: later callbacks of its
  // generation are ignored; the journal is read again from the last
  // acknowledged event.
  ++st.generation;
  forget_in_flight(st);
  leave(self);
}

/// Leaves the current connection without waiting on the worker: the next
/// connect starts when the link says it left, or after 2 s with a new
/// client if it did not (a broker that does not let go, see check_stall).
/// A connect never starts while a DISCONNECT is pending: Paho would send
/// the connect first and the stale DISCONNECT would end the new link.
void leave(self_ptr self) {
  auto& st = self->state;
  if (st.link->disconnect(st.generation)) {
    start_connect(self); // nothing to leave (not connected)
    return;
  }
  st.leaving = st.generation;
  self->delayed_send(self, leave_deadline, atom::left_v, st.generation, true);
}

/// The link left (`deadline`: or the time to wait for it is up).
void on_left(self_ptr self, std::uint64_t generation, bool deadline) {
  auto& st = self->state;
  if (st.leaving == 0 || generation != st.leaving)
    return;
  st.leaving = 0;
  if (deadline) {
    spdlog::warn("uplink: the broker did not let the old connection go within 2 s; a new "
                 "client connects");
    new_client(self);
  }
  start_connect(self);
}

} // namespace

// The uplink's message handlers, one function each; what each message means
// is said where the interface is declared (actors/interfaces.hpp).
namespace {

/// Keeps one request open at the journal for entries at `from` or later:
/// each answer is a commit to publish from (the journal knows no reader).
void await_commits(self_ptr self, std::uint64_t from) {
  self->request(self->state.cfg.journal, caf::infinite, atom::committed_v, from)
    .then([self](std::uint64_t next) {
            pump(self);
            await_commits(self, next);
          },
          [](const caf::error& err) {
            // The journal is gone: the supervisor restarts every actor.
            spdlog::warn("uplink: the journal stopped answering: {}", caf::to_string(err));
          });
}

void on_connected(self_ptr self, std::uint64_t generation) {
  auto& st = self->state;
  if (generation != st.generation || st.connected)
    return; // stale, or Paho reporting the same connection twice
  st.connecting = false;
  st.connected = true;
  st.backoff = std::chrono::milliseconds{0};
  st.first_failure = true;
  st.rotation->connected();
  auto attempt = st.rotation->current();
  st.v5_link = attempt.v5;
  auto depth = st.cfg.store->figures().depth;
  spdlog::info("uplink: connected to {} (MQTT {}) over mutual TLS; {} events waiting in the "
               "journal",
               attempt.uri, attempt.v5 ? "5" : "3.1.1", depth);
  // Files replaced since the last check (each connect reads them anew):
  // what the status says about them is brought up to date.
  if (!st.tls_problem.empty()) {
    read_cert_expiry(self);
    check_tls(self);
    st.tls_stamp = tls_stamp(st.cfg.mqtt);
    st.tls_fingerprint = tls_fingerprint(st.cfg.mqtt);
  }
  if (auto why = st.link->subscribe(st.topics.prefix() + "cmd/#"))
    spdlog::warn("uplink: cannot subscribe to commands: {}", *why);
  // One pass over those waiting: one Paho cannot take now is kept again
  // by publish_result (not retried in this loop, which would spin).
  for (auto waiting = std::exchange(st.pending_results, {}); !waiting.empty();
       waiting.pop_front())
    publish_result(self, std::move(waiting.front()));
  pump_results(self);
  publish_status(self);
  publish_lock_states(self, true);
  pump_retained(self); // what was in flight when the last link dropped
  pump(self);
  pump_audit(self);
}

void on_lost(self_ptr self, std::uint64_t generation, const std::string& reason) {
  auto& st = self->state;
  if (generation != st.generation)
    return;
  bool was_connected = st.connected;
  forget_in_flight(st);
  if (was_connected)
    spdlog::warn("uplink: {}", reason);
  st.last_failure = reason;
  // "auto": a broker that takes TCP and TLS but drops or refuses the
  // MQTT 5 CONNECT (RabbitMQ 3) is tried with 3.1.1; whether it does is
  // probed off this thread, and the next attempt waits for the verdict.
  if (!was_connected && st.rotation->may_fall_back()) {
    st.first_failure = false; // the verdict explains the failure too
    probe_broker(self, true);
    return;
  }
  after_failure(self, was_connected, false);
}

void on_probed(self_ptr self, std::uint64_t generation, const std::string& why, bool decide) {
  auto& st = self->state;
  if (!why.empty())
    spdlog::error("uplink: TLS: {}", why);
  // A verdict for an attempt since superseded (a reload, a stall), or one
  // after the deadline decided already, decides nothing.
  if (decide && generation == st.generation && st.verdict_awaited == generation
      && !st.connected && !st.connecting) {
    st.verdict_awaited = 0;
    after_failure(self, false, why.empty());
  }
}

/// The deadline of an attempt's probe: without a verdict yet, the attempt
/// counts as one the broker did not answer.
void on_probe_deadline(self_ptr self, std::uint64_t generation) {
  auto& st = self->state;
  if (st.verdict_awaited != generation || generation != st.generation || st.connected
      || st.connecting)
    return;
  spdlog::warn("uplink: the TLS probe of {} gave no verdict in time; going on without it",
               st.rotation->current().uri);
  st.verdict_awaited = 0;
  after_failure(self, false, false);
}

void on_acked(self_ptr self, std::uint64_t number) {
  auto& st = self->state;
  st.refusal_backoff = std::chrono::milliseconds{0};
  st.stalled = false;
  if (number == st.probe_number)
    st.probe_number = 0;
  if (st.retained_flights.erase(number) > 0) {
    pump_retained(self);
    return;
  }
  if (auto r = st.results_window.ack(number)) {
    // Each result leaves the outbox on its own PUBACK (one behind it
    // may be refused and read again); the journal actor writes the removal.
    self->send(st.cfg.journal, atom::remove_v, atom::result_v, r->first);
    st.routes_by_number.erase(r->first);
    st.results_window.release();
    pump_results(self);
    return;
  }
  if (st.audit_window.ack(number)) {
    if (auto upto = st.audit_window.release().upto; upto > 0)
      self->send(st.cfg.journal, atom::remove_v, atom::audit_v, upto);
    pump_audit(self);
    return;
  }
  st.events_window.ack(number);
  auto released = st.events_window.release();
  st.events_out += released.items;
  if (released.upto > 0) {
    // Removal is not urgent (a crash before it only re-sends events the
    // cloud can drop by event_id), so gather it: one journal message per
    // interval instead of one per PUBACK.
    if (!st.removal_scheduled) {
      st.removal_scheduled = true;
      self->delayed_send(self, removal_interval, atom::remove_v);
    }
  }
  pump(self);
}

void on_remove(self_ptr self) {
  auto& st = self->state;
  st.removal_scheduled = false;
  if (auto upto = st.events_window.acked_upto(); upto > st.removal_sent) {
    st.removal_sent = upto;
    self->send(st.cfg.journal, atom::remove_v, upto);
  }
}

void on_nacked(self_ptr self, std::uint64_t number, std::int32_t reason) {
  auto& st = self->state;
  if (number == st.probe_number)
    st.probe_number = 0;
  if (auto r = st.retained_flights.find(number); r != st.retained_flights.end()) {
    // Waiting again (unless a newer one is); the next PUBACK, tick or
    // retry sends it.
    requeue_retained(st, r->second);
    st.retained_flights.erase(r);
    if (reason >= 0x80)
      publish_refused(self, number, reason);
    return;
  }
  if (st.results_window.drop(number)) {
    // Read again from the outbox once publishing resumes.
    publish_refused(self, number, reason);
    return;
  }
  if (!st.audit_window.holds(number) && !st.events_window.holds(number))
    return; // from before a reconnect or a refusal: already being resent
  publish_refused(self, number, reason);
}

void on_retry(self_ptr self) {
  auto& st = self->state;
  st.publishing_paused = false;
  pump(self);
  pump_audit(self);
  pump_results(self);
  pump_retained(self);
}

void on_status(self_ptr self) {
  publish_status(self);
  self->delayed_send(self, std::chrono::seconds{self->state.cfg.mqtt.status_interval_s},
                     atom::status_v);
}

void on_command(self_ptr self, const std::string& topic, const std::string& payload,
                const std::string& response_topic, const std::string& correlation) {
  auto& st = self->state;
  auto prefix = st.topics.prefix() + "cmd/";
  if (!topic.starts_with(prefix))
    return; // not ours: the subscription only covers our prefix
  if (!response_topic.empty() || !correlation.empty()) {
    auto id = protocol::command_id_of(payload).value_or("");
    if (!response_topic.empty() && !acceptable_response_topic(st, response_topic))
      spdlog::warn("uplink: the response topic of command {} is not this gateway's "
                   "cmd_result or under its replies/; the result goes to cmd_result (with "
                   "the correlation data)",
                   id.empty() ? "(no id)" : id);
    if (!st.reply_routes.contains(id)) {
      st.reply_order.push_back(id);
      if (st.reply_order.size() > 1000) {
        st.reply_routes.erase(st.reply_order.front());
        st.reply_order.pop_front();
      }
    }
    st.reply_routes[id] = {response_topic, correlation.substr(0, 256)};
  }
  auto name = topic.substr(prefix.size());
  if (name.starts_with("credentials/") && st.cfg.credential_commands) {
    self->send(st.cfg.credential_commands, atom::command_v, name, payload);
    return;
  }
  if (name == "lock" && st.cfg.lock_commands) {
    self->send(st.cfg.lock_commands, atom::command_v, name, payload);
    return;
  }
  if ((name == "erase_subject" || name == "rotate_keys") && st.cfg.keeper) {
    caf::anon_send(st.cfg.keeper, atom::command_v, name, payload); // the keeper publishes the result
    return;
  }
  spdlog::warn("uplink: unknown command \"{}\" refused", name);
  protocol::command_result r;
  r.id = protocol::command_id_of(payload).value_or("");
  r.command = std::string{protocol::utf8_prefix(name, 64)};
  r.status = "error";
  r.error = input_error{"", "unknown command; this gateway accepts lock, "
                            "credentials/snapshot, credentials/delta, erase_subject and "
                            "rotate_keys"};
  r.ts = unix_ms_now();
  on_result(self, *keep_reply(st.cfg.vault.get(), "uplink", st.cfg.site, st.cfg.gateway, r));
}

void on_observed(self_ptr self, const std::string& lock, const lock_state_ptr& state) {
  auto& st = self->state;
  if (!state)
    return;
  std::int64_t seen = 0;
  if (st.cfg.locks_seen)
    for (const auto& [id, when] : st.cfg.locks_seen())
      if (id == lock)
        seen = when;
  if (auto p = st.presence.observed(lock, *state, seen, unix_ms_now()))
    publish_presence(self, *p);
}

void on_reload(self_ptr self, std::uint64_t locks, std::uint32_t cert_warning_days,
               std::uint32_t lock_silence_s) {
  auto& cfg = self->state.cfg;
  cfg.locks_configured = locks;
  cfg.lock_silence = std::chrono::seconds{lock_silence_s};
  self->state.presence.set_silence(cfg.lock_silence);
  bool warning_changed = cfg.mqtt.cert_warning_days != cert_warning_days;
  cfg.mqtt.cert_warning_days = cert_warning_days;
  reload_tls(self);
  if (warning_changed)
    read_cert_expiry(self); // the certificate's remaining life against the new bound
}

void on_tick(self_ptr self) {
  // The TLS files are watched, so a renewal dropped in place is used
  // without a signal (a reload does the same at once).
  reload_tls(self);
  check_stall(self);
  if (!self->state.tls_problem.empty()
      && unix_ms_now() - self->state.tls_problem_logged_at >= 3600 * 1000)
    check_tls(self);
  publish_lock_states(self, false);
  pump_retained(self); // what Paho could not take at the last try
  auto& presence = self->state.presence;
  if (presence.has_waiting() && self->state.cfg.locks_seen)
    for (const auto& p : presence.waiting(self->state.cfg.locks_seen()))
      publish_presence(self, p);
  self->delayed_send(self, tls_watch_interval, atom::tick_v);
}

constexpr auto beat_interval = std::chrono::milliseconds{100};

/// The heartbeat: records how late it ran (the worker's stall) and says so
/// once a minute at most when a stall reached a second.
void on_beat(self_ptr self) {
  auto& st = self->state;
  auto now = self->clock().now();
  st.worker_stalls.beat(st.beat_due, now);
  auto late = now - st.beat_due;
  if (late >= std::chrono::seconds{1} && now - st.stall_logged_at >= std::chrono::minutes{1}) {
    st.stall_logged_at = now;
    spdlog::warn("uplink: CAF's worker was held for {} ms (a handler blocked it); the uplink "
                 "and the supervisor waited meanwhile",
                 std::chrono::duration_cast<std::chrono::milliseconds>(late).count());
  }
  st.beat_due = now + beat_interval;
  self->delayed_send(self, beat_interval, atom::beat_v);
}

caf::result<std::string> on_get(self_ptr self) {
  // The same figures as the status message, plus the link's state, for
  // `lockbridge status` on the box (answered with the broker down too).
  auto rp = self->make_response_promise<std::string>();
  self->request(self->state.cfg.journal, std::chrono::seconds{5}, atom::figures_v)
    .then(
      [self, rp, s = status_now(self->state)](const journal_figures& f) mutable {
        auto& st = self->state;
        s.journal = f;
        add_health(st, s, f, self->clock().now());
        auto doc = nlohmann::json::parse(protocol::encode_status(s));
        doc["broker"] = {{"uri", st.rotation->current().uri},
                         {"protocol", st.v5_link ? "5" : "3.1.1"},
                         {"brokers", st.cfg.mqtt.brokers},
                         {"failovers", st.rotation->failovers()},
                         {"connected", st.connected},
                         {"stalled", st.stalled},
                         {"stalls", st.stalls},
                         {"in_flight", st.events_window.size()},
                         {"results_waiting", st.pending_results.size() + results_stored(st)},
                         {"retained_waiting",
                          st.retained_waiting.size() + st.retained_flights.size()}};
        add_local_detail(st, doc);
        rp.deliver(protocol::dump_safe(doc));
      },
      [rp](const caf::error& err) mutable { rp.deliver(err); });
  return rp;
}

} // namespace

namespace {

/// The link (Paho's, or the one the configuration brings) and its reports,
/// each a message to the uplink: they never touch its state.
std::shared_ptr<transport::mqtt_link> make_link(self_ptr self) {
  auto me = caf::actor_cast<caf::actor>(self);
  transport::mqtt_link_events events;
  events.connected = [me](std::uint64_t g) { caf::anon_send(me, atom::connected_v, g); };
  events.lost = [me](std::uint64_t g, std::string why) {
    caf::anon_send(me, atom::lost_v, g, std::move(why));
  };
  events.acked = [me](std::uint64_t n) { caf::anon_send(me, atom::acked_v, n); };
  events.nacked = [me](std::uint64_t n, std::int32_t reason) {
    caf::anon_send(me, atom::nacked_v, n, reason);
  };
  events.left = [me](std::uint64_t g) { caf::anon_send(me, atom::left_v, g, false); };
  events.arrived = [me](transport::mqtt_incoming in) {
    caf::anon_send(me, atom::command_v, std::move(in.topic), std::move(in.payload),
                   std::move(in.response_topic), std::move(in.correlation));
  };
  events.probed = [me](std::uint64_t g, std::string why, bool decide) {
    caf::anon_send(me, atom::probed_v, g, std::move(why), decide);
  };
  const auto& make = self->state.cfg.make_link;
  return make ? make(std::move(events)) : transport::make_paho_link(std::move(events));
}

/// The uplink's start: its windows, the TLS files' state, the Paho client,
/// its peers from the configuration, the first commit request to the
/// journal, its timers, and the goodbye said on a clean stop.
void start(self_ptr self) {
  auto& st = self->state;
  st.topics = protocol::topics{st.cfg.site, st.cfg.gateway};
  st.started_at = unix_ms_now();
  st.presence.set_silence(st.cfg.lock_silence);
  st.events_window = ack_window{st.cfg.mqtt.inflight_window};
  st.audit_window = ack_window{audit_window_size};
  st.results_window = ack_window{results_window_size};
  read_cert_expiry(self);
  check_tls(self);
  st.tls_stamp = tls_stamp(st.cfg.mqtt);
  st.tls_fingerprint = tls_fingerprint(st.cfg.mqtt);
  st.rotation.emplace(st.cfg.mqtt.brokers, st.cfg.mqtt.protocol);
  st.link = make_link(self);
  new_client(self);
  await_commits(self, 0);
  self->send(self, atom::connect_v);
  self->delayed_send(self, std::chrono::seconds{st.cfg.mqtt.status_interval_s}, atom::status_v);
  self->delayed_send(self, st.cfg.audit_interval, atom::audit_v);
  self->delayed_send(self, tls_watch_interval, atom::tick_v);
  st.beat_due = self->clock().now() + beat_interval;
  self->delayed_send(self, beat_interval, atom::beat_v);
  // Say goodbye on a clean stop, so the retained status is right at once.
  self->attach_functor([link = st.link,
                        goodbye = transport::mqtt_outgoing{
                          st.topics.status(),
                          protocol::encode_offline_will(st.cfg.site, st.cfg.gateway), true,
                          std::nullopt}] { link->close(goodbye); });
}

} // namespace

uplink_actor::behavior_type uplink(uplink_actor::stateful_pointer<uplink_state> self,
                                   uplink_config cfg) {
  log_exceptions(self);
  self->state.cfg = std::move(cfg);
  start(self);
  return {
    [self](atom::connect) { start_connect(self); },
    [self](atom::connected, std::uint64_t generation) { on_connected(self, generation); },
    [self](atom::lost, std::uint64_t generation, const std::string& reason) {
      on_lost(self, generation, reason);
    },
    [self](atom::probed, std::uint64_t generation, const std::string& why, bool decide) {
      on_probed(self, generation, why, decide);
    },
    [self](atom::probed, std::uint64_t generation) { on_probe_deadline(self, generation); },
    [self](atom::acked, std::uint64_t number) { on_acked(self, number); },
    [self](atom::remove) { on_remove(self); },
    [self](atom::nacked, std::uint64_t number, std::int32_t reason) {
      on_nacked(self, number, reason);
    },
    [self](atom::retry) { on_retry(self); },
    [self](atom::status) { on_status(self); },
    [self](atom::command, const std::string& topic, const std::string& payload,
           const std::string& response_topic, const std::string& correlation) {
      on_command(self, topic, payload, response_topic, correlation);
    },
    [self](atom::result, const command_reply_ptr& r) {
      if (r)
        on_result(self, *r);
    },
    [self](atom::observed, const std::string& lock, const lock_state_ptr& state) {
      on_observed(self, lock, state);
    },
    [self](atom::audit) {
      pump_audit(self);
      self->delayed_send(self, self->state.cfg.audit_interval, atom::audit_v);
    },
    [self](atom::reload, std::uint64_t locks, std::uint32_t cert_warning_days,
           std::uint32_t lock_silence_s) {
      on_reload(self, locks, cert_warning_days, lock_silence_s);
    },
    [self](atom::left, std::uint64_t generation, bool deadline) {
      on_left(self, generation, deadline);
    },
    [self](atom::tick) { on_tick(self); },
    [self](atom::beat) { on_beat(self); },
    [self](atom::get) -> caf::result<std::string> { return on_get(self); },
  };
}

} // namespace lockbridge
