#include "transports/ble_links.hpp"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "protocols/clock_guard.hpp"

namespace lockbridge::transport {

namespace ble = protocol::ble;
using bluez::props;
using ms = std::chrono::milliseconds;

ble_links::ble_links(ble_transport_config cfg, bluez::client& bus)
  : cfg_(std::move(cfg)),
    bus_(bus),
    scheduler_(cfg_.ble.max_connections, std::chrono::seconds{cfg_.ble.poll_interval_s}),
    limits_{ms{cfg_.ble.connect_timeout_ms}, ms{cfg_.ble.idle_release_ms},
            ms{cfg_.ble.max_hold_ms}},
    next_id_(cfg_.first_id) {
  apply_locks(cfg_.locks);
}

ble_links::~ble_links() {
  for (auto& [id, l] : links_) {
    l.session.end();
    OPENSSL_cleanse(l.lock.psk.data(), l.lock.psk.size());
  }
}

// ---- locks ----------------------------------------------------------------

void ble_links::apply_locks(const std::vector<ble_lock>& locks) {
  std::set<std::string> keep;
  for (const auto& l : locks) {
    keep.insert(l.id);
    auto [it, added] = links_.try_emplace(l.id);
    auto& k = it->second;
    if (!added && k.lock.address != l.address)
      release(k, "its address changed");
    k.lock = l;
    k.path = bluez::device_path(cfg_.ble.adapter, l.address);
    if (added) {
      k.assembly = ble::reassembler{cfg_.ble.fragment_timeout_ms};
      k.demand.next_poll = steady::now(); // every lock is visited once at start
    }
  }
  for (auto it = links_.begin(); it != links_.end();) {
    if (keep.contains(it->first)) {
      ++it;
      continue;
    }
    release(it->second, "it is no longer configured");
    for (auto& c : it->second.commands)
      finish(c, command_outcome::kind::not_connected);
    OPENSSL_cleanse(it->second.lock.psk.data(), it->second.lock.psk.size());
    it = links_.erase(it);
  }
  by_path_.clear();
  for (const auto& [id, l] : links_)
    by_path_[l.path] = id;
}

ble_link* ble_links::link_of_path(std::string_view path) {
  // A characteristic's path lies under its device's.
  for (auto& [p, id] : by_path_)
    if (path == p || (path.starts_with(p) && path.size() > p.size() && path[p.size()] == '/'))
      return &links_.find(id)->second;
  return nullptr;
}

ble_link* ble_links::link_of(const std::string& lock, std::uint64_t generation) {
  auto it = links_.find(lock);
  return it == links_.end() || it->second.generation != generation ? nullptr : &it->second;
}

std::map<std::string, std::int64_t, std::less<>> ble_links::last_seen() const {
  std::lock_guard guard{seen_mutex_};
  return seen_;
}

// ---- BlueZ's objects --------------------------------------------------------

void ble_links::refresh() {
  auto now = steady::now();
  if (now < next_adapter_check_)
    return;
  scan_objects();
  start_discovery();
  next_adapter_check_ = now + std::chrono::seconds{adapter_present_ ? 30 : 5};
}

/// Reads BlueZ's tree: adapter presence, device properties, and (for
/// `resolve`) the lock service's characteristics under that device.
void ble_links::scan_objects(ble_link* resolve) {
  std::string to_lock, from_lock;
  std::size_t mtu = cfg_.ble.default_mtu;
  auto seen = bus_.scan([&](const std::string& path, std::string_view iface, props& ps) {
    if (iface == bluez::device_iface)
      seen_device(path, ps, resolve == nullptr);
    if (iface != bluez::char_iface || resolve == nullptr || !path.starts_with(resolve->path + "/"))
      return;
    // The lock service's two characteristics, and the MTU BlueZ negotiated.
    auto uuid = ps["UUID"].text.value_or("");
    std::transform(uuid.begin(), uuid.end(), uuid.begin(), ::tolower);
    if (uuid == ble::to_lock_uuid) {
      to_lock = path;
      if (ps["MTU"].u16)
        mtu = *ps["MTU"].u16;
    } else if (uuid == ble::from_lock_uuid) {
      from_lock = path;
    }
  });
  if (!seen.answered) {
    if (adapter_present_ || next_adapter_check_ == steady::time_point{})
      spdlog::error("ble: BlueZ does not answer on the system bus ({}); BLE locks wait for it "
                    "(is bluetoothd running?)",
                    seen.error);
    adapter_present_ = false;
    discovering_ = false;
    return;
  }
  adapter_seen_now(seen.adapter_seen);
  if (resolve != nullptr) {
    resolve->to_lock_path = to_lock;
    resolve->from_lock_path = from_lock;
    resolve->mtu = std::clamp<std::size_t>(mtu, 23, 517);
  }
}

/// A device object of BlueZ's tree: a configured lock's device is known
/// (connectable); with `may_close`, a connection left from before is closed.
void ble_links::seen_device(const std::string& path, props& ps, bool may_close) {
  auto it = by_path_.find(path);
  if (it == by_path_.end())
    return;
  auto& l = links_.find(it->second)->second;
  l.device_known = true;
  if (ps["Connected"].flag)
    l.connected = *ps["Connected"].flag;
  if (ps["ServicesResolved"].flag)
    l.services_resolved = *ps["ServicesResolved"].flag;
  if (may_close && l.connected && l.at == phase::idle
      && steady::now() - l.released_at > std::chrono::seconds{5}) {
    // Left from before a restart (BlueZ keeps links its client dropped) or
    // made by another client: closed, so the adapter's limit holds; the
    // lock is connected again in its turn. (Our own releases take BlueZ a
    // moment: skipped.)
    spdlog::info("ble: lock {}: a BLE connection left from before; closing it", l.lock.id);
    bus_.disconnect(l.path);
    l.connected = false;
  }
}

/// Whether the configured adapter was in BlueZ's tree: said when it appears
/// or goes.
void ble_links::adapter_seen_now(bool seen) {
  if (seen && !adapter_present_)
    spdlog::info("ble: adapter {} found; serving {} BLE locks, at most {} connected at once",
                 cfg_.ble.adapter, links_.size(), cfg_.ble.max_connections);
  if (!seen && (adapter_present_ || next_adapter_check_ == steady::time_point{}))
    spdlog::error("ble: adapter {} not found in BlueZ; BLE locks wait for it (check "
                  "`bluetoothctl list` and [ble] adapter)",
                  cfg_.ble.adapter);
  if (!seen)
    discovering_ = false;
  adapter_present_ = seen;
}

void ble_links::start_discovery() {
  if (discovering_ || !adapter_present_)
    return;
  if (auto error = bus_.start_discovery()) {
    if (!discovery_warned_)
      spdlog::warn("ble: StartDiscovery on {}: {}; locks are still visited on their poll "
                   "interval (retried every 30 s)",
                   cfg_.ble.adapter, *error);
    discovery_warned_ = true;
    return;
  }
  discovering_ = true;
  discovery_warned_ = false;
}

void ble_links::properties_changed(const std::string& path, std::string_view iface, props& ps) {
  if (iface == bluez::char_iface) {
    auto v = ps.find("Value");
    if (v != ps.end() && v->second.data)
      notification(path, *v->second.data);
    return;
  }
  if (iface != bluez::device_iface)
    return;
  auto it = by_path_.find(path);
  if (it != by_path_.end()) // another device is not ours to follow
    device_changed(links_.find(it->second)->second, ps);
}

void ble_links::device_changed(ble_link& l, props& ps) {
  if (auto c = ps.find("Connected"); c != ps.end() && c->second.flag) {
    l.connected = *c->second.flag;
    // While connecting, the Connect call's own answer decides (a
    // disconnection signalled now is of an earlier link).
    if (!l.connected && l.at != phase::idle && l.at != phase::connecting)
      lost(l, "the lock disconnected");
  }
  if (auto s = ps.find("ServicesResolved"); s != ps.end() && s->second.flag) {
    l.services_resolved = *s->second.flag;
    if (l.services_resolved && l.at == phase::resolving)
      try_resolve(l);
  }
  if (auto sd = ps.find("ServiceData"); sd != ps.end()) {
    auto d = sd->second.service_data.find(std::string{ble::service_uuid});
    if (d != sd->second.service_data.end() && !d->second.empty()) {
      // Flags: bit 0 events waiting, bit 1 an access query waiting.
      if ((d->second[0] & 0x03) != 0)
        l.demand.wants(steady::now());
      l.demand.urgent = l.demand.urgent || (d->second[0] & 0x02) != 0;
    }
  }
}

// ---- connections ------------------------------------------------------------

void ble_links::enter(ble_link& l, phase p) {
  spdlog::debug("ble: lock {}: BLE {} -> {}", l.lock.id, to_string(l.at), to_string(p));
  l.at = p;
  l.phase_since = steady::now();
}

std::size_t ble_links::busy() const {
  std::size_t n = 0;
  for (const auto& [id, l] : links_)
    n += l.at != phase::idle ? 1 : 0;
  return n;
}

void ble_links::connect(ble_link& l) {
  l.lock_idle = false;
  l.assembly.clear();
  l.session.end();
  ++l.generation;
  enter(l, phase::connecting);
  l.connected_at = steady::now();
  // The answer finds its link again by id and session: an answer for an
  // older session of the lock is ignored.
  int r = bus_.connect(l.path, std::uint64_t{cfg_.ble.connect_timeout_ms} * 1000,
                       [this, lock = l.lock.id, generation = l.generation](const auto& e) {
                         connected(lock, generation, e);
                       });
  if (r < 0)
    failed(l, std::string{"Connect could not be sent: "} + std::strerror(-r));
}

void ble_links::connected(const std::string& lock, std::uint64_t generation,
                          const bluez::call_error& e) {
  auto* l = link_of(lock, generation);
  if (l == nullptr || l->at != phase::connecting)
    return;
  if (e.failed() && e.name != "org.bluez.Error.AlreadyConnected") {
    failed(*l, "Connect: " + e.message);
    return;
  }
  l->connected = true;
  enter(*l, phase::resolving);
  try_resolve(*l);
}

void ble_links::try_resolve(ble_link& l) {
  l.last_resolve = steady::now();
  scan_objects(&l); // the characteristics, and ServicesResolved if its signal was missed
  if (!l.services_resolved || l.to_lock_path.empty() || l.from_lock_path.empty())
    return; // wait for ServicesResolved; the connect timeout bounds it
  if (auto error = bus_.start_notify(l.from_lock_path)) {
    failed(l, "StartNotify: " + *error);
    return;
  }
  enter(l, phase::handshaking);
  send(l, ble::kind::hello, {});
}

/// Ends the connection on our side (the exchange is over, or it failed).
void ble_links::release(ble_link& l, const std::string& why) {
  if (l.at == phase::idle)
    return;
  spdlog::debug("ble: lock {}: BLE connection released ({})", l.lock.id, why);
  disconnect(l);
}

void ble_links::disconnect(ble_link& l) {
  if (bus_.attached())
    bus_.disconnect(l.path, l.at >= phase::handshaking ? l.from_lock_path : std::string{});
  end_session(l);
}

void ble_links::end_session(ble_link& l) {
  enter(l, phase::idle);
  l.released_at = steady::now();
  l.assembly.clear();
  l.session.end();
  l.events_in_flight = 0;
  l.state_pending = false;
  // Events of this session still in the journal: their answers have no link
  // to go to (the lock sends them again; the journal keeps one copy).
  std::erase_if(waiting_, [&](const auto& w) { return w.second.lock == l.lock.id; });
  // Commands sent in this session and unanswered go again next time.
  for (auto& c : l.commands)
    c.sent_counter.reset();
}

/// The lock dropped the connection.
void ble_links::lost(ble_link& l, const std::string& why) {
  if (l.at == phase::idle)
    return;
  bool mid = l.at != phase::ready || l.events_in_flight > 0 || l.assembly.in_assembly() > 0
             || std::any_of(l.commands.begin(), l.commands.end(),
                            [](const auto& c) { return c.sent_counter.has_value(); });
  if (mid) {
    spdlog::info("ble: lock {}: BLE connection lost mid-exchange ({}); retrying", l.lock.id, why);
    radio_scheduler::failed(l.demand, steady::now());
    l.demand.advertised = true; // what it wanted to say is still to be said
  }
  end_session(l);
}

void ble_links::failed(ble_link& l, const std::string& why) {
  ++counters_.connect_failures;
  spdlog::warn("ble: lock {} ({}): BLE connection failed while {}: {}; retry in {} ms", l.lock.id,
               l.lock.address, to_string(l.at), why,
               radio_scheduler::backoff(l.demand.failures + 1).count());
  radio_scheduler::failed(l.demand, steady::now());
  if (l.connected)
    disconnect(l);
  else
    end_session(l);
}

void ble_links::bus_lost() {
  for (auto& [id, l] : links_)
    if (l.at != phase::idle)
      end_session(l);
  adapter_present_ = false;
  discovering_ = false;
  next_adapter_check_ = steady::time_point{};
}

void ble_links::release_all() {
  for (auto& [id, l] : links_)
    if (l.at != phase::idle)
      disconnect(l);
}

/// Whom to connect next (transports/ble_scheduler.hpp): urgent (an access
/// query waits), then commands, then advertised events, then polls due; the
/// longest waiting first.
void ble_links::schedule() {
  if (!adapter_present_ || !bus_.attached())
    return;
  std::vector<radio_scheduler::candidate> candidates;
  candidates.reserve(links_.size());
  for (auto& [id, l] : links_)
    candidates.push_back(
      {id, &l.demand, l.at == phase::idle && l.device_known, !l.commands.empty()});
  for (const auto& id : scheduler_.pick(candidates, busy(), steady::now()))
    connect(links_.find(id)->second);
}

namespace {

ble_link_view view_of(const ble_link& l) {
  return {l.at,
          l.phase_since,
          l.connected_at,
          l.last_activity,
          l.last_resolve,
          l.events_in_flight > 0,
          !l.commands.empty(),
          l.assembly.in_assembly() > 0,
          l.state_pending,
          l.lock_idle};
}

} // namespace

/// Does what the link's state machine decided (transports/ble_link_state).
void ble_links::act(ble_link& l, ble_step step, steady::time_point now) {
  switch (step) {
  case ble_step::none: return;
  case ble_step::fail_resolving:
    failed(l, "the lock service was not found (GATT UUID " + std::string{ble::service_uuid} + ")");
    return;
  case ble_step::fail_handshake: failed(l, "no hello answer"); return;
  case ble_step::resolve_again: try_resolve(l); return;
  case ble_step::release_done:
  case ble_step::release_quiet:
    // The lock advertises again when it has more to say.
    l.demand.advertised = false;
    l.demand.urgent = false;
    release(l, step == ble_step::release_done ? "the lock has nothing more to say" : "quiet");
    return;
  case ble_step::release_stuck:
    // An answer that never came: the lock and the gateway both start again
    // on the next connection.
    l.demand.advertised = true;
    l.demand.waiting_since = now;
    spdlog::info("ble: lock {}: no progress on its BLE link for 30 s; released, to start again "
                 "on the next connection",
                 l.lock.id);
    release(l, "no progress");
    return;
  case ble_step::release_yield:
    l.demand.advertised = true; // it had more to say: it comes back in turn
    l.demand.waiting_since = now;
    release(l, "held long enough while other locks wait");
    return;
  }
}

/// Fragments that waited too long, and commands whose deadline passed.
void ble_links::expire(ble_link& l, steady::time_point now) {
  if (auto dropped = l.assembly.expire(protocol::unix_ms_now())) {
    counters_.fragments_dropped += dropped;
    spdlog::warn("ble: lock {}: {} BLE message(s) missing fragments after {} ms; dropped (the "
                 "sender retries)",
                 l.lock.id, dropped, cfg_.ble.fragment_timeout_ms);
  }
  for (auto it = l.commands.begin(); it != l.commands.end();) {
    if (now < it->deadline) {
      ++it;
      continue;
    }
    finish(*it, it->attempts == 0 ? command_outcome::kind::not_connected
                                  : command_outcome::kind::no_answer);
    it = l.commands.erase(it);
  }
}

void ble_links::tick() {
  auto now = steady::now();
  bool others_wait = false;
  for (auto& [id, l] : links_)
    if (l.at == phase::idle && (l.demand.urgent || l.demand.advertised || !l.commands.empty()))
      others_wait = true;
  std::size_t connected_now = 0;
  for (auto& [id, l] : links_) {
    expire(l, now);
    if (l.at == phase::ready)
      radio_scheduler::succeeded(l.demand);
    act(l, next_step(view_of(l), limits_, others_wait, now), now);
    connected_now += l.at != phase::idle ? 1 : 0;
  }
  counters_.connected_now = static_cast<std::uint32_t>(connected_now);
  if (connected_now > counters_.connected_peak)
    counters_.connected_peak = static_cast<std::uint32_t>(connected_now);
}

void ble_links::finish(pending_command& c, command_outcome::kind k) {
  command_outcome o;
  o.result = k;
  o.attempts = c.attempts;
  if (c.done)
    c.done(std::move(o));
  c.done = nullptr;
}

// ---- what the gateway hands over ----------------------------------------------

void ble_links::complete(request_id id, const events_reply& reply) {
  auto w = waiting_.find(id);
  if (w == waiting_.end())
    return;
  auto info = w->second;
  waiting_.erase(w);
  auto* l = link_of(info.lock, info.generation);
  if (l == nullptr || l->at != phase::ready)
    return; // that session is gone; the lock sends the events again
  if (l->events_in_flight > 0)
    --l->events_in_flight;
  switch (reply.result) {
  case events_reply::kind::acked:
    send(*l, ble::kind::events_answer,
         ble::encode_answer({info.re, 204, protocol::encode_events_ack(reply.acked_seq)}));
    break;
  case events_reply::kind::full:
    // As CoAP's 5.03 with Max-Age: keep the events, come back after this.
    send(*l, ble::kind::events_answer,
         ble::encode_answer({info.re, 503, ble::encode_retry_after(cfg_.full_retry_after_s)}));
    break;
  case events_reply::kind::failed:
    answer(*l, ble::kind::events_answer, info.re, 500, reply.diagnostic);
    break;
  }
}

void ble_links::add_command(const std::string& lock, pending_command command) {
  auto it = links_.find(lock);
  if (it == links_.end()) {
    finish(command, command_outcome::kind::not_connected);
    return;
  }
  auto& l = it->second;
  if (l.commands.empty() && l.at == phase::idle)
    l.demand.waiting_since = steady::now();
  l.commands.push_back(std::move(command));
  if (l.at == phase::ready)
    send_commands(l);
}

} // namespace lockbridge::transport
