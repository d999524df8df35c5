#include "actors/supervisor.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/access_service.hpp"
#include "actors/coap_endpoint.hpp"
#include "actors/commands.hpp"
#include "actors/credentials.hpp"
#include "actors/error.hpp"
#include "config/keys.hpp"
#include "protocols/json_input.hpp"
#include "actors/journal.hpp"
#include "actors/keeper.hpp"
#include "actors/results.hpp"
#include "actors/uplink.hpp"
#include "config/secrets.hpp"
#include "store/journal_input.hpp"
#include "protocols/clock_guard.hpp"
#include "transports/ble_transport.hpp"
#include "transports/coap_server.hpp"

#include <openssl/crypto.h>

#include <filesystem>
#include <map>

namespace lockbridge {

namespace {

using self_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

/// Every value of an actor's configuration comes from a checked config file,
/// so one that validate() refuses is a defect here: the start fails (exit 1)
/// naming the actor and the field (decision 70).
template <class Config>
void require_valid(const std::string& actor, const Config& cfg) {
  if (auto err = validate(cfg))
    throw std::runtime_error{actor + ": " + caf::to_string(err)};
}

/// Each lock's key, split by transport. Throws naming the lock whose key
/// cannot be read.
std::pair<std::vector<transport::coap_lock>, std::vector<transport::ble_lock>>
read_lock_keys(const std::vector<config::lock_config>& locks) {
  std::pair<std::vector<transport::coap_lock>, std::vector<transport::ble_lock>> out;
  for (const auto& lock : locks) {
    auto psk = config::read_psk(lock.psk_file);
    if (!psk)
      throw configuration_error{"lock " + lock.id + ": " + psk.error().to_string()};
    if (lock.transport == config::lock_transport::ble)
      out.second.push_back({lock.id, lock.ble_address, *psk});
    else
      out.first.push_back({lock.id, *psk});
  }
  return out;
}

/// Which member of the transport set serves each lock.
std::map<std::string, std::size_t, std::less<>>
routes_of(const std::vector<config::lock_config>& locks) {
  std::map<std::string, std::size_t, std::less<>> out;
  for (const auto& lock : locks)
    out[lock.id] = lock.transport == config::lock_transport::ble ? 1 : 0;
  return out;
}

/// Stage 1: the calls every transport makes into the gateway (one struct
/// for CoAP and BLE). Events and decisions are pseudonymised where they
/// were decoded, on the transport's thread, and go to the journal (no
/// identifier in the clear leaves that thread); access queries are decided
/// by the access service there too; lock states go to the uplink through
/// the supervisor (the transports are built before the uplink, whose
/// figures read theirs).
transport::lock_handlers make_handlers(const std::shared_ptr<lock_roster>& roster,
                                       const std::shared_ptr<access_service>& access,
                                       const std::shared_ptr<const store::pseudonym_source>& names,
                                       const supervisor_actor& relay) {
  transport::lock_handlers h;
  h.on_events = [roster, names](transport::request_id id, const std::string& lock,
                                protocol::event_batch batch) {
    if (auto journal = roster->journal_for(lock))
      caf::anon_send(*journal, atom::append_v, id,
                     std::make_shared<store::append_request>(
                       store::journal_batch(lock, batch, *names, protocol::unix_ms_now())));
  };
  h.on_access = [access](const std::string& lock, const protocol::access_request& request) {
    return access->decide(lock, request);
  };
  h.on_decided = [roster, access, names](const std::string& lock,
                                         const protocol::access_request& request,
                                         const protocol::access_decision& decision) {
    // The gateway's own event; its answer went to the lock already, so no
    // one waits for this commit (request id 0 is never a lock's).
    if (auto journal = roster->journal_for(lock))
      caf::anon_send(*journal, atom::append_v, std::uint64_t{0},
                     std::make_shared<store::append_request>(store::journal_decision(
                       lock, request, decision, access->now(), *names)));
  };
  h.clock = [access] { return access->now(); };
  h.on_state = [relay](const std::string& lock, const protocol::lock_state& state) {
    caf::anon_send(relay, atom::observed_v, lock,
                   lock_state_ptr{std::make_shared<const protocol::lock_state>(state)});
  };
  return h;
}

/// The transports of a start: CoAP always, BLE when a lock uses it.
struct transports {
  std::shared_ptr<transport::coap_server> coap;
  std::shared_ptr<transport::ble_transport> ble;
  std::shared_ptr<transport::transport_set> set; ///< CoAP is member 0, BLE 1
};

/// Stage 2: the transports, built (not started: the CoAP endpoint actor
/// starts them). A listener that cannot be opened is an environment error.
transports make_transports(const config::gateway_config& gw,
                           const transport::lock_handlers& handlers) {
  transport::coap_server_config coap_cfg;
  coap_cfg.dtls_listen = gw.coap.dtls_listen;
  coap_cfg.plain_listen = gw.coap.plain_listen;
  coap_cfg.full_retry_after_s = gw.coap.full_retry_after_s;
  coap_cfg.max_sessions = gw.coap.max_sessions;
  coap_cfg.idle_release_s = gw.coap.idle_release_s;
  coap_cfg.receive_buffer_kb = gw.coap.receive_buffer_kb;
  coap_cfg.handlers = handlers;
  auto [coap_locks, ble_locks] = read_lock_keys(gw.locks);
  coap_cfg.locks = std::move(coap_locks);
  transports t;
  try {
    t.coap = std::make_shared<transport::coap_server>(std::move(coap_cfg));
  } catch (const std::runtime_error& e) {
    throw environment_error{e.what()};
  }
  t.set = std::make_shared<transport::transport_set>();
  t.set->add(t.coap);
  if (!ble_locks.empty()) {
    transport::ble_transport_config b_cfg;
    b_cfg.ble = gw.ble;
    b_cfg.locks = std::move(ble_locks);
    b_cfg.handlers = handlers;
    b_cfg.first_id = transport::transport_set::id_base(1) + 1;
    b_cfg.full_retry_after_s = gw.coap.full_retry_after_s;
    t.ble = std::make_shared<transport::ble_transport>(std::move(b_cfg));
    t.set->add(t.ble);
  }
  t.set->set_routes(routes_of(gw.locks));
  return t;
}

/// The lock table of `lockbridge status`/`locks` and the metrics: each
/// configured lock's transport, last word and last refusal, then strangers.
nlohmann::json lock_table(const lock_roster& roster, const transport::transport_set& server) {
  auto seen = server.last_seen();
  auto refused = server.refusals();
  auto kinds = server.transport_of();
  auto locks = nlohmann::json::array();
  for (const auto& id : roster.ids()) {
    auto it = seen.find(id);
    auto kind = kinds.find(id);
    nlohmann::json row{{"id", id},
                       {"transport", kind == kinds.end() ? "coap" : kind->second},
                       {"last_seen", it == seen.end() ? 0 : it->second}};
    if (auto r = refused.locks.find(id); r != refused.locks.end())
      row["last_refusal"] = {{"reason", r->second.reason},
                             {"peer", r->second.peer},
                             {"at", r->second.at_ms},
                             {"count", r->second.count}};
    locks.push_back(std::move(row));
  }
  auto strangers = nlohmann::json::array();
  for (const auto& s : refused.strangers)
    strangers.push_back(
      {{"identity", s.identity}, {"peer", s.peer}, {"at", s.at_ms}, {"count", s.count}});
  return nlohmann::json{{"locks", std::move(locks)}, {"strangers", std::move(strangers)}};
}

protocol::gateway_status::coap_part coap_figures(const transport::coap_server& coap,
                                                 std::uint32_t max_sessions) {
  const auto& c = coap.counters();
  protocol::gateway_status::coap_part p;
  p.sessions = c.sessions;
  p.peak_sessions = c.peak_sessions;
  p.max_sessions = max_sessions;
  p.session_refusals = c.session_refusals;
  p.sessions_released = c.sessions_released;
  p.handshake_refusals = c.handshake_refusals;
  p.wrong_key_handshakes = c.wrong_key_handshakes;
  p.requests = c.requests;
  p.bad_requests = c.bad_requests;
  return p;
}

protocol::gateway_status::ble_part ble_figures(const transport::ble_transport& ble) {
  const auto& c = ble.counters();
  protocol::gateway_status::ble_part b;
  b.connections = c.connections;
  b.connect_failures = c.connect_failures;
  b.connected_now = c.connected_now;
  b.peak_connected = c.connected_peak;
  b.messages = c.messages;
  b.refused_forged = c.refused_forged;
  b.refused_replayed = c.refused_replayed;
  b.refused_unconfigured = c.refused_unconfigured;
  b.bad_messages = c.bad_messages;
  b.fragments_dropped = c.fragments_dropped;
  return b;
}

/// Stage 3a: the uplink's configuration, its figures read from the stores
/// and the transports.
uplink_config make_uplink_config(const supervisor_state& st, const transports& t,
                                 const std::shared_ptr<access_service>& access) {
  const auto& gw = st.cfg.gateway;
  uplink_config up;
  up.site = gw.site;
  up.gateway = gw.gateway;
  up.version = st.cfg.version;
  up.locks_configured = gw.locks.size();
  up.mqtt = gw.mqtt;
  up.store = st.vault->events;
  up.credentials = st.vault->credentials;
  up.access = access;
  up.vault = st.vault;
  up.retention_days = gw.store.retention_days;
  up.lock_silence = std::chrono::seconds{gw.coap.lock_silence_s};
  up.locks_seen = [roster = st.roster, server = t.set] {
    std::vector<std::pair<std::string, std::int64_t>> out;
    auto seen = server->last_seen();
    for (const auto& id : roster->ids()) {
      auto it = seen.find(id);
      out.emplace_back(id, it == seen.end() ? 0 : it->second);
    }
    return out;
  };
  up.lock_table = [roster = st.roster, server = t.set] { return lock_table(*roster, *server); };
  up.coap_figures = [coap = t.coap, max = gw.coap.max_sessions] { return coap_figures(*coap, max); };
  if (t.ble)
    up.ble_figures = [ble = t.ble] { return ble_figures(*ble); };
  return up; // validated once its peers are in it (spawn_children)
}

/// Stage 3b: the journal's configuration; its answers go to the transport
/// that asked.
journal_config make_journal_config(const std::shared_ptr<store::vault>& vault,
                                   const std::shared_ptr<transport::transport_set>& server,
                                   std::uint32_t retention_days) {
  journal_config j;
  j.store = vault->events;
  j.health = std::shared_ptr<store::storage_health>(vault, &vault->storage);
  j.audit = vault->audit;
  j.results = vault->results;
  j.vault = vault;
  j.retention_days = retention_days;
  j.on_purged = [vault](std::uint64_t removed) {
    audit(*vault, "retention_purge", {{"table", "journal"}, {"records", removed}});
  };
  j.reply = [server](std::uint64_t request, const store::append_outcome& o) {
    transport::events_reply reply;
    if (o.result == store::append_outcome::status::refused_full)
      reply.result = transport::events_reply::kind::full;
    reply.acked_seq = o.acked_seq;
    server->complete(request, std::move(reply));
  };
  require_valid("journal", j);
  return j;
}

/// Stage 4b: the actors that answer the cloud's commands (credentials,
/// keeper, lock commands), whose handles go into the uplink's configuration.
/// A result is kept in the outbox before it is published (a restart while
/// the cloud is away loses none; removed on the broker's PUBACK); the
/// supervisor relays it to the uplink.
void spawn_command_handlers(self_ptr self, const transports& t,
                            const std::shared_ptr<access_service>& access, uplink_config& up) {
  auto& st = self->state;
  const auto& gw = st.cfg.gateway;
  auto vault = st.vault;
  auto publish_result = [relay = caf::actor_cast<supervisor_actor>(self)](command_reply_ptr r) {
    caf::anon_send(relay, atom::result_v, std::move(r));
  };
  lockbridge::credentials_config cr_cfg;
  cr_cfg.store = vault->credentials;
  cr_cfg.access = access;
  cr_cfg.vault = vault;
  cr_cfg.site = gw.site;
  cr_cfg.gateway = gw.gateway;
  cr_cfg.publish_result = publish_result;
  require_valid("credentials", cr_cfg);
  keeper_config k_cfg;
  k_cfg.vault = vault;
  k_cfg.site = gw.site;
  k_cfg.gateway = gw.gateway;
  k_cfg.retention_days = gw.store.retention_days;
  k_cfg.epoch_days = gw.security.pseudonym_epoch_days;
  k_cfg.publish_result = publish_result;
  require_valid("keeper", k_cfg);
  commands_config c_cfg;
  c_cfg.vault = vault;
  c_cfg.server = t.set;
  c_cfg.site = gw.site;
  c_cfg.gateway = gw.gateway;
  c_cfg.publish_result = publish_result;
  c_cfg.is_lock = [roster = st.roster](const std::string& lock) {
    return roster->contains(lock);
  };
  require_valid("commands", c_cfg);
  auto cr = self->spawn<caf::detached>(credentials, cr_cfg);
  auto kp = self->spawn<caf::detached>(keeper, k_cfg);
  auto cm = self->spawn<caf::detached>(commands, c_cfg);
  up.credential_commands = cr;
  up.keeper = kp;
  up.lock_commands = cm;
  st.keeper = kp;
  for (const auto& a : {caf::actor_cast<caf::actor>(cr), caf::actor_cast<caf::actor>(kp),
                        caf::actor_cast<caf::actor>(cm)})
    st.children.push_back(a);
}

/// A start of the actors, in stages: the calls into the gateway, the
/// transports, the configurations (each validated before its actor is
/// spawned), then the actors in dependency order, each with its peers at
/// construction: the journal (it knows no other actor; the transports'
/// handlers send it what locks said, through the lock roster), the command
/// handlers, the uplink (to the journal and
/// the handlers) and last the endpoint that starts the transports. What
/// travels against that order goes by request/response (the uplink asks
/// the journal for commits) or through the supervisor (results, lock
/// states). A failure in any stage throws; the caller stops whatever was
/// spawned.
void spawn_children(self_ptr self) {
  auto& st = self->state;
  const auto& gw = st.cfg.gateway;
  st.children.clear();
  st.roster = std::make_shared<lock_roster>();
  for (const auto& lock : gw.locks)
    st.roster->add(lock.id); // (ids were validated with the configuration)
  auto access = std::make_shared<access_service>(st.vault, gw);
  access->on_fatal = st.cfg.on_fatal;
  if (auto reading = access->clock().read(); reading.behind_ms > 2000)
    spdlog::warn("access: the system clock is {} s behind the latest time this gateway saved; "
                 "deciding with the latter until it catches up (check NTP and the real-time "
                 "clock)",
                 reading.behind_ms / 1000);
  auto t = make_transports(
    gw, make_handlers(st.roster, access, st.vault->pseudonyms,
                      caf::actor_cast<supervisor_actor>(self)));
  auto up_cfg = make_uplink_config(st, t, access);
  auto j_cfg = make_journal_config(st.vault, t.set, gw.store.retention_days);

  st.journal = self->spawn<caf::detached>(journal, j_cfg);
  st.children.push_back(caf::actor_cast<caf::actor>(st.journal));
  st.roster->set_journal(st.journal); // before any transport runs (the endpoint starts them)
  spawn_command_handlers(self, t, access, up_cfg);
  up_cfg.journal = st.journal;
  require_valid("uplink", up_cfg);
  st.uplink = self->spawn(uplink, up_cfg);
  st.children.push_back(caf::actor_cast<caf::actor>(st.uplink));
  auto f = st.vault->credentials->figures();
  spdlog::info("credentials: {} in force at version {}{}", f.count, f.version,
               f.synced_at == 0 ? " (never synced: doors follow their offline policy)" : "");
  st.server = t.coap;
  st.ble = t.ble;
  st.transports = t.set;
  auto endpoint = self->spawn(coap_endpoint, t.set);
  st.children.push_back(caf::actor_cast<caf::actor>(endpoint));
  for (auto& child : st.children)
    self->monitor(child);
  spdlog::info("supervisor: running with {} locks", gw.locks.size());
}

void stop_children(self_ptr self) {
  for (auto& child : self->state.children) {
    self->demonitor(child);
    self->send_exit(child, caf::exit_reason::user_shutdown);
  }
  self->state.children.clear();
  self->state.uplink = nullptr; // results and lock states meanwhile wait in the outbox or the locks
  self->state.server.reset();
  self->state.ble.reset();
  self->state.transports.reset();
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v)
    s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? std::string{"none"} : s;
}

/// The lock set of a reload, changed in place: added locks join the roster
/// first, then the transports; removed locks are refused first, then they
/// leave the roster. Returns why it was not applied, if it was not.
std::optional<std::string> reload_locks(self_ptr self, const config::gateway_config& next,
                                        std::vector<std::string>& added,
                                        std::vector<std::string>& removed);

/// A reload: every key the table in config/keys.cpp marks `applied` is
/// applied now (the lock set in place, the log level, the uplink's lock
/// silence and certificate warning, a new key-encryption key); every other
/// changed key is named as needing a restart. Returns the outcome as JSON
/// (for `lockbridge reload`).
std::string reload(self_ptr self, const config::gateway_config& next) {
  auto& st = self->state;
  auto plan = config::plan_reload(st.cfg.gateway, next);
  if (!plan.needs_restart.empty())
    spdlog::warn("reload: changed, and taking effect only after a restart (systemctl restart "
                 "lockbridge): {}; the running values stay until then",
                 joined(plan.needs_restart));
  if (!plan.applied.empty())
    spdlog::info("reload: applying {}", joined(plan.applied));
  if (next.log_level != st.cfg.gateway.log_level)
    spdlog::set_level(spdlog::level::from_str(next.log_level));
  // A new key-encryption key (rotated in place or under a new path): re-wrap
  // the data keys under it. Nothing else changes: values stay as they are.
  if (auto kek = config::read_key32(next.security.kek_file); !kek) {
    spdlog::error("reload: key-encryption key: {}; the current one stays in force",
                  kek.error().to_string());
  } else if (!st.vault->keys->is_kek(*kek)) {
    try {
      st.vault->keys->rewrap(*kek);
      spdlog::info("keys: data keys re-wrapped under the new key-encryption key ({}); the old "
                   "one is no longer needed",
                   next.security.kek_file.string());
      audit(*st.vault, "kek_rotated", {{"data_keys", st.vault->keys->ids().size()}});
    } catch (const std::exception& e) {
      spdlog::error("reload: re-wrapping the data keys failed: {}; the old key-encryption key "
                    "stays in force",
                    e.what());
    }
    OPENSSL_cleanse(kek->data(), kek->size());
  }
  // TLS files rotated in place (same paths): the uplink checks and
  // reconnects; it takes its reloadable settings with them.
  if (st.uplink)
    self->send(st.uplink, atom::reload_v, std::uint64_t{next.locks.size()},
               next.mqtt.cert_warning_days, next.coap.lock_silence_s);
  std::vector<std::string> added, removed;
  auto locks_refused = reload_locks(self, next, added, removed);
  auto running_locks = st.cfg.gateway.locks;
  auto running_locks_text = st.cfg.gateway.values.find("locks") != st.cfg.gateway.values.end()
                              ? std::optional<std::string>{st.cfg.gateway.values["locks"]}
                              : std::nullopt;
  config::apply_reloadable(st.cfg.gateway, next);
  if (locks_refused) {
    // Everything else applies; the lock set stays as it was.
    st.cfg.gateway.locks = std::move(running_locks);
    if (running_locks_text)
      st.cfg.gateway.values["locks"] = *running_locks_text;
    std::erase(plan.applied, std::string{"locks"});
  }
  audit(*st.vault, "config_reloaded",
        {{"file", next.source.string()}, {"locks", st.cfg.gateway.locks.size()},
         {"added", added}, {"removed", removed}, {"applied", plan.applied},
         {"needs_restart", plan.needs_restart},
         {"refused", locks_refused ? nlohmann::json{{"locks", *locks_refused}}
                                   : nlohmann::json::object()}});
  nlohmann::json outcome{{"ok", !locks_refused},
                         {"applied", plan.applied},
                         {"needs_restart", plan.needs_restart},
                         {"locks", st.cfg.gateway.locks.size()},
                         {"added", added},
                         {"removed", removed}};
  if (locks_refused)
    outcome["refused"] = {{"locks", *locks_refused}};
  return protocol::dump_safe(outcome);
}

std::optional<std::string> reload_locks(self_ptr self, const config::gateway_config& next,
                                        std::vector<std::string>& added,
                                        std::vector<std::string>& removed) {
  auto& st = self->state;
  if (!st.server || st.restarting) {
    spdlog::warn("reload: the gateway is restarting its actors; the new locks apply when they "
                 "are back");
    return std::nullopt;
  }
  std::vector<transport::coap_lock> locks;
  std::vector<transport::ble_lock> ble_locks;
  try {
    std::tie(locks, ble_locks) = read_lock_keys(next.locks);
  } catch (const std::exception& e) {
    spdlog::error("reload: {}; the running lock set stays in force", e.what());
    return std::string{e.what()};
  }
  if (!ble_locks.empty() && !st.ble) {
    std::string why = "BLE locks were added to a gateway started without any; restart it "
                      "(systemctl restart lockbridge)";
    spdlog::error("reload: {}; the running lock set stays in force", why);
    return why;
  }
  std::map<std::string, std::filesystem::path> before, after;
  for (const auto& l : st.cfg.gateway.locks)
    before[l.id] = l.psk_file;
  for (const auto& l : next.locks)
    after[l.id] = l.psk_file;
  std::vector<std::string> kept;
  for (const auto& [id, file] : after)
    (before.contains(id) ? kept : added).push_back(id);
  for (const auto& [id, file] : before)
    if (!after.contains(id))
      removed.push_back(id);
  // Added locks join the roster first, then the server accepts them; the
  // server refuses removed locks first, then they leave the roster.
  for (const auto& id : added)
    st.roster->add(id);
  st.server->set_locks(std::move(locks));
  if (st.ble)
    st.ble->set_locks(std::move(ble_locks));
  st.transports->set_routes(routes_of(next.locks));
  for (const auto& id : removed)
    st.roster->remove(id);
  spdlog::info("reload: {} locks now; added: {}; removed: {}; the others kept their sessions",
               next.locks.size(), joined(added), joined(removed));
  return std::nullopt;
}

/// A child ended. A damaged state or LMDB giving up ends the process with
/// the documented code; anything else restarts every child, with a backoff,
/// up to max_restarts within restart_window.
void on_child_down(self_ptr self, const caf::down_msg& msg) {
  auto& st = self->state;
  if (st.restarting)
    return;
  // A damaged state found at run time, or LMDB giving up on the file: a
  // restart of the actors would meet the same file. End the process with
  // the documented code instead (systemd's policy decides what follows).
  if (msg.reason == ec::state_damaged || msg.reason == ec::storage_panic) {
    auto kind = msg.reason == ec::state_damaged ? failure_kind::state : failure_kind::runtime;
    auto why = caf::to_string(msg.reason);
    spdlog::critical("supervisor: {}; stopping", why);
    stop_children(self);
    if (st.cfg.on_fatal)
      st.cfg.on_fatal(kind, why);
    self->quit(caf::exit_reason::user_shutdown);
    return;
  }
  spdlog::error("supervisor: an actor failed ({}); restarting all of them",
                caf::to_string(msg.reason));
  auto now = std::chrono::steady_clock::now();
  std::erase_if(st.restarts, [&](auto t) { return now - t > st.cfg.restart_window; });
  st.restarts.push_back(now);
  stop_children(self);
  if (st.restarts.size() > st.cfg.max_restarts) {
    auto why = std::to_string(st.restarts.size()) + " restarts within "
               + std::to_string(st.cfg.restart_window.count()) + " s";
    spdlog::critical("supervisor: giving up after {}", why);
    if (st.cfg.on_fatal)
      st.cfg.on_fatal(failure_kind::runtime, why);
    self->quit(caf::exit_reason::user_shutdown);
    return;
  }
  st.restarting = true;
  auto delay = std::chrono::milliseconds{500} * (1 << std::min<std::size_t>(st.restarts.size(), 5));
  self->delayed_send(self, delay, atom::restart_v);
}

void on_watchdog_tick(self_ptr self) {
  auto& st = self->state;
  // Healthy means: every child is running. While they restart, the
  // watchdog starves; if restarts never succeed, systemd steps in.
  if (!st.restarting && !st.children.empty())
    st.cfg.on_watchdog();
  self->delayed_send(self, st.cfg.watchdog_interval, atom::tick_v);
}

void on_restart(self_ptr self) {
  auto& st = self->state;
  st.restarting = false;
  try {
    spawn_children(self);
  } catch (const std::exception& e) {
    spdlog::critical("supervisor: restart failed: {}", e.what());
    stop_children(self);
    if (st.cfg.on_fatal)
      st.cfg.on_fatal(kind_of(e), e.what());
    self->quit(caf::exit_reason::user_shutdown);
  }
}

/// What a supervisor whose start failed answers until it is gone.
supervisor_actor::behavior_type not_started() {
  auto refuse = [] { return caf::make_error(ec::restarting, "the gateway did not start"); };
  return {[](atom::restart) {},
          [refuse](atom::reload, const config_ptr&) -> caf::result<std::string> {
            return refuse();
          },
          [](atom::tick) {},
          [refuse](atom::get) -> caf::result<std::string> { return refuse(); },
          [refuse](atom::command, std::string&, std::string&) -> caf::result<std::string> {
            return refuse();
          },
          [](atom::result, const command_reply_ptr&) {},
          [](atom::observed, const std::string&, const lock_state_ptr&) {}};
}

} // namespace

std::shared_ptr<store::vault> open_state(const config::gateway_config& gw, bool exclusive,
                                         bool start_empty) {
  store::vault_keys keys;
  // The key material leaves memory however this ends.
  struct cleanse {
    store::vault_keys& k;
    ~cleanse() {
      OPENSSL_cleanse(k.kek.data(), k.kek.size());
      OPENSSL_cleanse(k.lookup.data(), k.lookup.size());
      if (k.previous_kek)
        OPENSSL_cleanse(k.previous_kek->data(), k.previous_kek->size());
    }
  } cleanse_keys{keys};
  auto kek = config::read_key32(gw.security.kek_file);
  if (!kek)
    throw configuration_error{"key-encryption key: " + kek.error().to_string()};
  keys.kek = *kek;
  OPENSSL_cleanse(kek->data(), kek->size());
  if (!gw.security.previous_kek_file.empty()) {
    auto previous = config::read_key32(gw.security.previous_kek_file);
    if (!previous)
      throw configuration_error{"previous key-encryption key: " + previous.error().to_string()};
    keys.previous_kek = *previous;
    OPENSSL_cleanse(previous->data(), previous->size());
  }
  auto lookup = config::read_key32(gw.credentials.lookup_key_file);
  if (!lookup)
    throw configuration_error{"credential lookup key: " + lookup.error().to_string()};
  keys.lookup = *lookup;
  OPENSSL_cleanse(lookup->data(), lookup->size());
  std::optional<store::state_owner> owner;
  if (exclusive)
    owner = store::state_owner{gw.site, gw.gateway, start_empty};
  return store::open_vault(gw.store.state_dir, gw.store.journal_max_bytes, keys,
                           protocol::unix_ms_now(), exclusive, owner);
}

supervisor_actor::behavior_type
supervisor(supervisor_actor::stateful_pointer<supervisor_state> self, supervisor_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  log_exceptions(self);
  try {
    st.vault = st.cfg.vault ? st.cfg.vault : open_state(st.cfg.gateway);
    st.cfg.vault.reset();
    spawn_children(self);
  } catch (const std::exception& e) {
    stop_children(self);
    if (st.cfg.on_start_failed)
      st.cfg.on_start_failed(kind_of(e), e.what());
    self->quit(caf::exit_reason::user_shutdown);
    return not_started();
  }
  if (st.cfg.on_ready)
    st.cfg.on_ready();
  self->set_down_handler([self](const caf::down_msg& msg) { on_child_down(self, msg); });
  // Stop the children while the state still exists (an attached functor
  // would run after CAF destroyed the state: it crashed on every SIGTERM).
  self->set_exit_handler([self](caf::exit_msg& msg) {
    stop_children(self);
    self->quit(msg.reason);
  });
  if (st.cfg.on_watchdog && st.cfg.watchdog_interval.count() > 0)
    self->delayed_send(self, st.cfg.watchdog_interval, atom::tick_v);
  return {
    [self](atom::reload, const config_ptr& next) -> std::string {
      if (!next) {
        audit(*self->state.vault, "config_reload_refused",
              {{"file", self->state.cfg.gateway.source.string()},
               {"reason", "the file has errors (logged); the running configuration stays"}});
        return protocol::dump_safe(nlohmann::json{{"ok", false}});
      }
      return reload(self, *next);
    },
    [self](atom::get) -> caf::result<std::string> {
      auto& st = self->state;
      if (!st.uplink || st.restarting)
        return caf::make_error(ec::restarting, "the gateway is restarting its actors");
      return self->delegate(st.uplink, atom::get_v);
    },
    [self](atom::command, std::string& name, std::string& payload) -> caf::result<std::string> {
      auto& st = self->state;
      if (name != "erase_subject" && name != "rotate_keys")
        return caf::make_error(ec::command_refused,
                               "only erase_subject and rotate_keys are accepted locally");
      if (!st.keeper || st.restarting)
        return caf::make_error(ec::restarting, "the gateway is restarting its actors");
      return self->delegate(st.keeper, atom::command_v, std::move(name), std::move(payload));
    },
    [self](atom::result, command_reply_ptr& r) {
      // Kept in the outbox already: one that finds no uplink (a restart)
      // is read from there by the next.
      if (self->state.uplink)
        self->send(self->state.uplink, atom::result_v, std::move(r));
    },
    [self](atom::observed, std::string& lock, lock_state_ptr& state) {
      if (self->state.uplink) // none during a restart: observed again on the lock's next session
        self->send(self->state.uplink, atom::observed_v, std::move(lock), std::move(state));
    },
    [self](atom::tick) { on_watchdog_tick(self); },
    [self](atom::restart) { on_restart(self); },
  };
}

} // namespace lockbridge
