#include "transports/ble_transport.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include "protocols/ble_link.hpp"
#include "protocols/clock_guard.hpp"
#include "transports/contain.hpp"
#include "transports/ble_scheduler.hpp"
#include "transports/ble_link_state.hpp"
#include "transports/ble_session.hpp"
#include "transports/bluez_wire.hpp"
#include "transports/priority.hpp"
#include "transports/thread_owner.hpp"

namespace lockbridge::transport {

namespace ble = protocol::ble;

namespace {

using bluez::address_of_path;
using bluez::adapter_iface;
using bluez::char_iface;
using bluez::device_iface;
using bluez::device_path;
using bluez::prop;
using bluez::props;
using bluez::read_props;
using steady = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

constexpr std::uint64_t call_timeout_us = 5'000'000;

std::int64_t now_ms() { return protocol::unix_ms_now(); }

struct pending_command {
  std::vector<std::uint8_t> body;
  steady::time_point deadline;
  command_callback done;
  std::uint32_t attempts = 0;
  std::optional<std::uint64_t> sent_counter; ///< in the current session
};

using phase = ble_phase;

} // namespace

struct ble_transport::impl {
  ble_transport_config cfg;
  radio_scheduler scheduler{cfg.ble.max_connections, std::chrono::seconds{cfg.ble.poll_interval_s}};
  ble_counters counters;
  sd_bus* bus = nullptr;
  int wake_fd = -1;
  std::thread thread;
  std::atomic<bool> running{false};

  struct link {
    ble_lock lock;
    warn_limiter bad_batch_warnings; ///< only the BLE thread uses it
    std::string path; ///< the device's object path
    phase at = phase::idle;
    bool device_known = false;
    bool connected = false;
    bool services_resolved = false;
    std::string to_lock_path, from_lock_path;
    std::size_t mtu = 23;
    radio_demand demand; ///< why it should be visited, and its backoff
    // connection
    steady::time_point phase_since{};
    steady::time_point connected_at{};
    steady::time_point last_activity{};
    steady::time_point last_resolve{};
    steady::time_point released_at{};
    std::uint64_t generation = 0; ///< sessions so far (answers to an old one are dropped)
    ble_session session; ///< nonce, keys and counters of the current session
    std::uint16_t next_msg_id = 1;
    bool lock_idle = false;
    bool state_pending = false; ///< asked for the lock's state, no answer yet
    std::size_t events_in_flight = 0;
    ble::reassembler assembly{2000};
    std::deque<pending_command> commands;
    std::int64_t last_seen_ms = 0;
  };
  std::map<std::string, link, std::less<>> links;           ///< by lock id
  std::map<std::string, std::string, std::less<>> by_path;  ///< device path -> lock id
  struct waiting_events {
    std::string lock;
    std::uint64_t generation = 0;
    std::uint64_t re = 0;
  };
  std::map<request_id, waiting_events> waiting;
  request_id next_id = 1;
  bool adapter_present = false;
  bool discovering = false;
  bool discovery_warned = false;
  steady::time_point next_adapter_check{};
  std::map<std::string, steady::time_point, std::less<>> unconfigured_logged;
  std::map<std::string, std::string, std::less<>> char_uuids; ///< path -> UUID, other devices

  // Cross-thread inboxes.
  std::mutex mutex;
  std::deque<std::pair<request_id, events_reply>> completions;
  struct new_command {
    std::string lock;
    pending_command command;
  };
  std::deque<new_command> new_commands;
  std::optional<std::vector<ble_lock>> new_locks;
  /// Who was turned away, for the lock table.
  refusal_log refusals;
  mutable std::mutex seen_mutex;
  std::map<std::string, std::int64_t, std::less<>> seen;

  explicit impl(ble_transport_config c) : cfg(std::move(c)), next_id(cfg.first_id) {
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0)
      throw std::runtime_error{"BLE: eventfd failed"};
    apply_locks(cfg.locks);
  }

  ~impl() {
    for (auto& [id, l] : links)
      l.session.end();
    detach();
    if (wake_fd >= 0)
      ::close(wake_fd);
  }

  /// What an asynchronous call's answer needs to find its link again (a
  /// reply for an older session of the lock is ignored).
  struct call_ctx {
    impl* self;
    std::string lock;
    std::uint64_t generation;
  };

  static void free_ctx(void* p) { delete static_cast<call_ctx*>(p); }

  int call_async(sd_bus_message* m, sd_bus_message_handler_t callback, const link& l,
                 std::uint64_t usec) {
    auto* ctx = new call_ctx{this, l.lock.id, l.generation};
    sd_bus_slot* slot = nullptr;
    int r = sd_bus_call_async(bus, &slot, m, callback, ctx, usec);
    if (r < 0) {
      delete ctx;
      return r;
    }
    sd_bus_slot_set_destroy_callback(slot, &impl::free_ctx);
    sd_bus_slot_set_floating(slot, 1);
    sd_bus_slot_unref(slot);
    return r;
  }

  link* link_of(const call_ctx* ctx) {
    auto it = links.find(ctx->lock);
    return it == links.end() || it->second.generation != ctx->generation ? nullptr : &it->second;
  }

  void wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  // ---- locks ------------------------------------------------------------

  void apply_locks(const std::vector<ble_lock>& locks) {
    std::set<std::string> keep;
    for (const auto& l : locks) {
      keep.insert(l.id);
      auto [it, added] = links.try_emplace(l.id);
      auto& k = it->second;
      if (!added && k.lock.address != l.address)
        release(k, "its address changed");
      k.lock = l;
      k.path = device_path(cfg.ble.adapter, l.address);
      if (added) {
        k.assembly = ble::reassembler{cfg.ble.fragment_timeout_ms};
        k.demand.next_poll = steady::now(); // every lock is visited once at start
      }
    }
    for (auto it = links.begin(); it != links.end();) {
      if (keep.contains(it->first)) {
        ++it;
        continue;
      }
      release(it->second, "it is no longer configured");
      for (auto& c : it->second.commands)
        finish(c, command_outcome::kind::not_connected);
      OPENSSL_cleanse(it->second.lock.psk.data(), it->second.lock.psk.size());
      it = links.erase(it);
    }
    by_path.clear();
    for (const auto& [id, l] : links)
      by_path[l.path] = id;
  }

  link* link_of_path(std::string_view path) {
    // A characteristic's path lies under its device's.
    for (auto& [p, id] : by_path)
      if (path == p || (path.starts_with(p) && path.size() > p.size() && path[p.size()] == '/'))
        return &links.find(id)->second;
    return nullptr;
  }

  // ---- BlueZ objects ------------------------------------------------------

  /// Walks GetManagedObjects: adapter presence, device properties, and (for
  /// `resolve`) the lock service's characteristics under that device.
  void scan_objects(link* resolve = nullptr) {
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(bus, bluez::service, "/", "org.freedesktop.DBus.ObjectManager",
                               "GetManagedObjects", &error, &reply, "");
    if (r < 0) {
      if (adapter_present || next_adapter_check == steady::time_point{})
        spdlog::error("ble: BlueZ does not answer on the system bus ({}); BLE locks wait for "
                      "it (is bluetoothd running?)",
                      error.message != nullptr ? error.message : strerror(-r));
      adapter_present = false;
      discovering = false;
      sd_bus_error_free(&error);
      return;
    }
    const std::string adapter_path = "/org/bluez/" + cfg.ble.adapter;
    bool adapter_seen = false;
    std::string to_lock, from_lock;
    std::size_t mtu = cfg.ble.default_mtu;
    r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
    while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
      const char* path = nullptr;
      if (sd_bus_message_read(reply, "o", &path) < 0 || path == nullptr)
        break;
      std::string p = path;
      r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
      while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
        const char* iface = nullptr;
        if ((r = sd_bus_message_read(reply, "s", &iface)) < 0 || iface == nullptr)
          break;
        props ps;
        if ((r = read_props(reply, ps)) < 0)
          break;
        std::string_view i = iface;
        if (i == adapter_iface && p == adapter_path)
          adapter_seen = true;
        if (i == device_iface)
          seen_device(p, ps, resolve == nullptr);
        if (i == char_iface && resolve != nullptr && p.starts_with(resolve->path + "/"))
          seen_characteristic(p, ps, to_lock, from_lock, mtu);
        sd_bus_message_exit_container(reply);
      }
      sd_bus_message_exit_container(reply);
      sd_bus_message_exit_container(reply);
    }
    sd_bus_message_unref(reply);
    adapter_seen_now(adapter_seen);
    if (resolve != nullptr) {
      resolve->to_lock_path = to_lock;
      resolve->from_lock_path = from_lock;
      resolve->mtu = std::clamp<std::size_t>(mtu, 23, 517);
    }
  }

  /// A device object of BlueZ's tree: a configured lock's device is known
  /// (connectable); with `may_close`, a connection left from before is closed.
  void seen_device(const std::string& path, props& ps, bool may_close) {
    auto it = by_path.find(path);
    if (it == by_path.end())
      return;
    auto& l = links.find(it->second)->second;
    l.device_known = true;
    if (ps["Connected"].flag)
      l.connected = *ps["Connected"].flag;
    if (ps["ServicesResolved"].flag)
      l.services_resolved = *ps["ServicesResolved"].flag;
    if (may_close && l.connected && l.at == phase::idle
        && steady::now() - l.released_at > std::chrono::seconds{5}) {
      // Left from before a restart (BlueZ keeps links its client dropped)
      // or made by another client: closed, so the adapter's limit holds;
      // the lock is connected again in its turn. (Our own releases take
      // BlueZ a moment: skipped.)
      spdlog::info("ble: lock {}: a BLE connection left from before; closing it", l.lock.id);
      sd_bus_call_method_async(bus, nullptr, bluez::service, l.path.c_str(), device_iface, "Disconnect",
                               nullptr, nullptr, "");
      l.connected = false;
    }
  }

  /// A GATT characteristic under the device being resolved: the lock
  /// service's two characteristics, and the MTU BlueZ negotiated.
  static void seen_characteristic(const std::string& path, props& ps, std::string& to_lock,
                                  std::string& from_lock, std::size_t& mtu) {
    auto uuid = ps["UUID"].text.value_or("");
    std::transform(uuid.begin(), uuid.end(), uuid.begin(), ::tolower);
    if (uuid == ble::to_lock_uuid) {
      to_lock = path;
      if (ps["MTU"].u16)
        mtu = *ps["MTU"].u16;
    } else if (uuid == ble::from_lock_uuid) {
      from_lock = path;
    }
  }

  /// Whether the configured adapter was in BlueZ's tree: said when it
  /// appears or goes.
  void adapter_seen_now(bool seen) {
    if (seen && !adapter_present)
      spdlog::info("ble: adapter {} found; serving {} BLE locks, at most {} connected at once",
                   cfg.ble.adapter, links.size(), cfg.ble.max_connections);
    if (!seen && (adapter_present || next_adapter_check == steady::time_point{}))
      spdlog::error("ble: adapter {} not found in BlueZ; BLE locks wait for it (check "
                    "`bluetoothctl list` and [ble] adapter)",
                    cfg.ble.adapter);
    if (!seen)
      discovering = false;
    adapter_present = seen;
  }

  void start_discovery() {
    if (discovering || !adapter_present)
      return;
    const std::string adapter_path = "/org/bluez/" + cfg.ble.adapter;
    sd_bus_message* m = nullptr;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    // Only our locks' advertisements, and each one again when it changes.
    if (sd_bus_message_new_method_call(bus, &m, bluez::service, adapter_path.c_str(), adapter_iface,
                                       "SetDiscoveryFilter")
        >= 0) {
      std::string uuid{ble::service_uuid};
      sd_bus_message_append(m, "a{sv}", 3, "Transport", "s", "le", "DuplicateData", "b", 1,
                            "UUIDs", "as", 1, uuid.c_str());
      if (sd_bus_call(bus, m, call_timeout_us, &error, nullptr) < 0)
        spdlog::warn("ble: SetDiscoveryFilter: {}", error.message ? error.message : "failed");
      sd_bus_error_free(&error);
      sd_bus_message_unref(m);
    }
    int r = sd_bus_call_method(bus, bluez::service, adapter_path.c_str(), adapter_iface, "StartDiscovery",
                               &error, nullptr, "");
    if (r < 0 && (error.name == nullptr || std::string_view{error.name} != "org.bluez.Error.InProgress")) {
      if (!discovery_warned)
        spdlog::warn("ble: StartDiscovery on {}: {}; locks are still visited on their poll "
                     "interval (retried every 30 s)",
                     cfg.ble.adapter, error.message ? error.message : strerror(-r));
      discovery_warned = true;
    } else {
      discovering = true;
      discovery_warned = false;
    }
    sd_bus_error_free(&error);
  }

  // ---- signals ------------------------------------------------------------

  static int on_properties(sd_bus_message* m, void* userdata, sd_bus_error*) {
    contain("ble: a BlueZ signal", [&] { static_cast<impl*>(userdata)->properties_changed(m); },
            [] {});
    return 0;
  }

  static int on_objects(sd_bus_message*, void* userdata, sd_bus_error*) {
    auto* self = static_cast<impl*>(userdata);
    self->next_adapter_check = steady::time_point{}; // rescan on the next pass
    return 0;
  }

  void properties_changed(sd_bus_message* m) {
    const char* iface = nullptr;
    if (sd_bus_message_read(m, "s", &iface) < 0)
      return;
    props ps;
    if (read_props(m, ps) < 0)
      return;
    std::string path = sd_bus_message_get_path(m) != nullptr ? sd_bus_message_get_path(m) : "";
    std::string_view i = iface;
    if (i == char_iface) {
      auto v = ps.find("Value");
      if (v != ps.end() && v->second.data)
        notification(path, *v->second.data);
      return;
    }
    if (i != device_iface)
      return;
    auto it = by_path.find(path);
    if (it == by_path.end())
      return; // another device: not ours to follow
    auto& l = links.find(it->second)->second;
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

  /// The UUID of a characteristic (cached: paths of BlueZ objects are stable).
  std::string uuid_of(const std::string& path) {
    if (auto it = char_uuids.find(path); it != char_uuids.end())
      return it->second;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    char* text = nullptr;
    std::string uuid;
    if (sd_bus_get_property_string(bus, bluez::service, path.c_str(), char_iface, "UUID", &error, &text)
        >= 0) {
      uuid = text;
      std::transform(uuid.begin(), uuid.end(), uuid.begin(), ::tolower);
    }
    std::free(text);
    sd_bus_error_free(&error);
    if (char_uuids.size() > 1000)
      char_uuids.clear();
    char_uuids[path] = uuid;
    return uuid;
  }

  void notification(const std::string& path, const ble::bytes& value) {
    auto* l = link_of_path(path);
    // Other devices' and other services' characteristics (a phone, a
    // battery level) are none of our business.
    if (l == nullptr ? uuid_of(path) != ble::from_lock_uuid : path != l->from_lock_path) {
      spdlog::debug("ble: a value change on {} (not the lock service); ignored", path);
      return;
    }
    if (l == nullptr) {
      ++counters.refused_unconfigured;
      auto address = address_of_path(path);
      refusals.stranger(address, address);
      auto now = steady::now();
      if (unconfigured_logged.size() > 1000)
        unconfigured_logged.clear();
      auto& last = unconfigured_logged[address];
      if (last == steady::time_point{} || now - last > std::chrono::minutes{1}) {
        last = now;
        spdlog::warn("ble: a message from {}, which is no configured lock; refused (add it as "
                     "a [[locks]] entry with transport = \"ble\" if it is one)",
                     address);
      }
      return;
    }
    if (l->at != phase::handshaking && l->at != phase::ready) {
      // Late: the lock spoke as the link was released. It says it again.
      spdlog::debug("ble: lock {}: a BLE notification outside a session; ignored", l->lock.id);
      return;
    }
    l->last_activity = steady::now();
    auto o = l->assembly.add(value, now_ms());
    using what = ble::reassembler::outcome::what;
    if (o.result == what::invalid) {
      ++counters.fragments_dropped;
      spdlog::warn("ble: lock {}: bad BLE fragment: {}; dropped", l->lock.id, o.diagnostic);
      return;
    }
    if (o.result == what::duplicate)
      spdlog::debug("ble: lock {}: a BLE fragment came twice; ignored", l->lock.id);
    if (o.result != what::complete)
      return;
    message(*l, o.message);
  }

  // ---- messages -----------------------------------------------------------

  /// A reassembled message: judged by the session (refused, the session
  /// established, or authentic and dispatched).
  void message(link& l, const ble::bytes& bytes) {
    using verdict = ble_session::verdict_kind;
    auto v = l.session.accept(l.lock.psk, l.lock.id, bytes);
    if (v.result == verdict::forged || v.result == verdict::replayed) {
      bool forged = v.result == verdict::forged;
      ++(forged ? counters.refused_forged : counters.refused_replayed);
      refusals.refused(l.lock.id, forged ? "forged" : "replayed", l.lock.address);
      spdlog::warn("ble: lock {}: {}", l.lock.id, v.reason);
      return;
    }
    if (v.result == verdict::established) {
      enter(l, phase::ready);
      ++counters.connections;
      // A new session: the lock's state is asked for each time (as a CoAP
      // lock's is observed), then what waits for it goes out.
      l.state_pending = send(l, ble::kind::state_request, {});
      send_commands(l);
      return;
    }
    ++counters.messages;
    l.last_seen_ms = now_ms();
    {
      std::lock_guard guard{seen_mutex};
      seen[l.lock.id] = l.last_seen_ms;
    }
    authentic(l, *v.message);
  }

  /// An authentic message from a lock (its seal and counter checked),
  /// dispatched by kind.
  void authentic(link& l, const ble::opened& m) {
    switch (m.what) {
    case ble::kind::events:
      return events_message(l, m);
    case ble::kind::access:
      return access_query(l, m);
    case ble::kind::time_request: {
      const auto& h = cfg.handlers;
      auto now = h.clock ? h.clock() : now_ms();
      send(l, ble::kind::time_answer, ble::encode_answer({m.counter, 205, protocol::encode_time(now)}));
      return;
    }
    case ble::kind::state:
      return state_message(l, m);
    case ble::kind::command_answer:
      return command_answer(l, m);
    case ble::kind::idle:
      return idle_message(l, m);
    default:
      return;
    }
  }

  /// Events: decoded and handed on; answered once the journal has them.
  void events_message(link& l, const ble::opened& m) {
    auto checked = check_events("ble", l.lock.id, m.body, m.body.size(), l.bad_batch_warnings);
    if (!checked.batch) {
      ++counters.bad_messages;
      answer(l, ble::kind::events_answer, m.counter, static_cast<std::uint16_t>(checked.code),
             checked.error);
      return;
    }
    l.lock_idle = false;
    auto id = next_id++;
    waiting[id] = {l.lock.id, l.generation, m.counter};
    ++l.events_in_flight;
    if (cfg.handlers.on_events)
      cfg.handlers.on_events(id, l.lock.id, std::move(*checked.batch));
  }

  /// An access query: decided here and answered at once.
  void access_query(link& l, const ble::opened& m) {
    const auto& h = cfg.handlers;
    auto out = answer_access(h.on_access, l.lock.id, m.body);
    if (out.code == 400) {
      ++counters.bad_messages;
      spdlog::warn("ble: lock {}: bad access query over BLE: {}", l.lock.id, out.error);
    } else if (out.code == 500) {
      spdlog::error("ble: lock {}: access decision failed: {}", l.lock.id, out.error);
    }
    send(l, ble::kind::access_answer,
         ble::encode_answer({m.counter, static_cast<std::uint16_t>(out.code), std::move(out.body)}));
    if (out.request && h.on_decided)
      h.on_decided(l.lock.id, *out.request, out.decision);
  }

  /// The lock's own state (asked for on each connection).
  void state_message(link& l, const ble::opened& m) {
    auto state = protocol::decode_lock_state(m.body);
    if (!state) {
      ++counters.bad_messages;
      spdlog::warn("ble: lock {}: bad state over BLE: {}; ignored", l.lock.id,
                   state.error().to_string());
      return;
    }
    l.state_pending = false;
    if (cfg.handlers.on_state)
      cfg.handlers.on_state(l.lock.id, *state);
  }

  /// The lock's answer to a command of this session: its outcome goes back.
  void command_answer(link& l, const ble::opened& m) {
    auto a = ble::decode_answer(m.body);
    if (!a) {
      ++counters.bad_messages;
      spdlog::warn("ble: lock {}: bad command answer over BLE: {}", l.lock.id,
                   a.error().to_string());
      return;
    }
    auto it = std::find_if(l.commands.begin(), l.commands.end(),
                           [&](const auto& c) { return c.sent_counter == a->re; });
    if (it == l.commands.end()) {
      spdlog::debug("ble: lock {}: a BLE command answer for no waiting command; ignored", l.lock.id);
      return;
    }
    command_outcome o;
    o.result = command_outcome::kind::answered;
    o.code = a->code;
    o.payload = std::move(a->payload);
    o.attempts = it->attempts;
    auto done = std::move(it->done);
    l.commands.erase(it);
    if (done)
      done(std::move(o));
  }

  /// The lock has nothing more to say. Body: the counter of the last
  /// gateway message it had when it said so; an idle sent before our latest
  /// request does not count.
  void idle_message(link& l, const ble::opened& m) {
    if (m.body.size() != 8) {
      ++counters.bad_messages;
      spdlog::warn("ble: lock {}: bad idle over BLE: expected 8 bytes (the last counter it "
                   "received), got {}",
                   l.lock.id, m.body.size());
      return;
    }
    std::uint64_t re = 0;
    for (auto b : m.body)
      re = (re << 8) | b;
    if (re < l.session.last_sent())
      return;
    l.lock_idle = true;
    l.demand.advertised = false;
    l.demand.urgent = false;
  }

  void answer(link& l, ble::kind k, std::uint64_t re, std::uint16_t code, const std::string& text) {
    send(l, k, ble::encode_answer({re, code, ble::bytes(text.begin(), text.end())}));
  }

  /// Seals (or, for hello, frames) and writes one message; false when the
  /// link failed.
  bool send(link& l, ble::kind k, const ble::bytes& body) {
    ble::bytes message;
    if (k == ble::kind::hello) {
      message = l.session.hello();
    } else {
      auto sealed = l.session.seal(k, body);
      if (!sealed)
        return false;
      message = std::move(*sealed);
    }
    auto parts = ble::fragment(l.next_msg_id++, message, l.mtu);
    if (!parts) {
      spdlog::error("ble: lock {}: BLE {} message too large: {}", l.lock.id, ble::to_string(k),
                    parts.error().to_string());
      return false;
    }
    for (const auto& part : *parts)
      if (!write(l, part))
        return false;
    l.last_activity = steady::now();
    return true;
  }

  bool write(link& l, const ble::bytes& value) {
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus, &m, bluez::service, l.to_lock_path.c_str(), char_iface,
                                           "WriteValue");
    if (r >= 0)
      r = sd_bus_message_append_array(m, 'y', value.data(), value.size());
    if (r >= 0)
      r = sd_bus_message_append(m, "a{sv}", 1, "type", "s", "command");
    // Asynchronous: writes of one connection reach BlueZ in order; a failure
    // ends the connection (the lock and the gateway both retry).
    if (r >= 0)
      r = call_async(m, &impl::on_write_done, l, call_timeout_us);
    sd_bus_message_unref(m);
    if (r < 0) {
      lost(l, std::string{"writing to the lock failed: "} + strerror(-r));
      return false;
    }
    return true;
  }

  static int on_write_done(sd_bus_message* reply, void* userdata, sd_bus_error*) {
    return contain("ble: a write's reply", [&] { return on_write_done_body(reply, userdata); },
                   [] { return 0; });
  }

  static int on_write_done_body(sd_bus_message* reply, void* userdata) {
    auto* ctx = static_cast<call_ctx*>(userdata);
    const sd_bus_error* e = sd_bus_message_get_error(reply);
    if (e == nullptr)
      return 0;
    if (auto* l = ctx->self->link_of(ctx); l != nullptr && l->at != phase::idle)
      ctx->self->lost(*l, std::string{"writing to the lock failed: "}
                            + (e->message != nullptr ? e->message : "error"));
    return 0;
  }

  void send_commands(link& l) {
    for (auto& c : l.commands) {
      if (c.sent_counter)
        continue;
      ++c.attempts;
      if (!send(l, ble::kind::command, c.body))
        return;
      c.sent_counter = l.session.last_sent();
    }
  }

  void finish(pending_command& c, command_outcome::kind k) {
    command_outcome o;
    o.result = k;
    o.attempts = c.attempts;
    if (c.done)
      c.done(std::move(o));
    c.done = nullptr;
  }

  // ---- connections --------------------------------------------------------

  void enter(link& l, phase p) {
    spdlog::debug("ble: lock {}: BLE {} -> {}", l.lock.id, to_string(l.at), to_string(p));
    l.at = p;
    l.phase_since = steady::now();
  }

  std::size_t busy() const {
    std::size_t n = 0;
    for (const auto& [id, l] : links)
      n += l.at != phase::idle ? 1 : 0;
    return n;
  }

  void connect(link& l) {
    l.lock_idle = false;
    l.assembly.clear();
    l.session.end();
    ++l.generation;
    enter(l, phase::connecting);
    l.connected_at = steady::now();
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus, &m, bluez::service, l.path.c_str(), device_iface,
                                           "Connect");
    if (r >= 0)
      r = call_async(m, &impl::on_connect_done, l,
                     std::uint64_t{cfg.ble.connect_timeout_ms} * 1000);
    sd_bus_message_unref(m);
    if (r < 0)
      failed(l, std::string{"Connect could not be sent: "} + strerror(-r));
  }

  static int on_connect_done(sd_bus_message* reply, void* userdata, sd_bus_error*) {
    return contain("ble: Connect's reply", [&] { return on_connect_done_body(reply, userdata); },
                   [] { return 0; });
  }

  static int on_connect_done_body(sd_bus_message* reply, void* userdata) {
    auto* ctx = static_cast<call_ctx*>(userdata);
    auto* self = ctx->self;
    auto* l = self->link_of(ctx);
    if (l == nullptr || l->at != phase::connecting)
      return 0;
    const sd_bus_error* e = sd_bus_message_get_error(reply);
    if (e != nullptr
        && (e->name == nullptr || std::string_view{e->name} != "org.bluez.Error.AlreadyConnected")) {
      self->failed(*l, std::string{"Connect: "} + (e->message != nullptr ? e->message : "error"));
      return 0;
    }
    l->connected = true;
    self->enter(*l, phase::resolving);
    self->try_resolve(*l);
    return 0;
  }

  void try_resolve(link& l) {
    l.last_resolve = steady::now();
    scan_objects(&l); // the characteristics, and ServicesResolved if its signal was missed
    if (!l.services_resolved || l.to_lock_path.empty() || l.from_lock_path.empty())
      return; // wait for ServicesResolved; the connect timeout bounds it
    sd_bus_error error = SD_BUS_ERROR_NULL;
    int r = sd_bus_call_method(bus, bluez::service, l.from_lock_path.c_str(), char_iface, "StartNotify",
                               &error, nullptr, "");
    if (r < 0 && (error.name == nullptr
                  || std::string_view{error.name} != "org.bluez.Error.InProgress")) {
      auto why = std::string{"StartNotify: "} + (error.message ? error.message : strerror(-r));
      sd_bus_error_free(&error);
      failed(l, why);
      return;
    }
    sd_bus_error_free(&error);
    enter(l, phase::handshaking);
    send(l, ble::kind::hello, {});
  }

  /// Ends the connection on our side (the exchange is over, or it failed).
  void release(link& l, const std::string& why) {
    if (l.at == phase::idle)
      return;
    spdlog::debug("ble: lock {}: BLE connection released ({})", l.lock.id, why);
    disconnect(l);
  }

  void disconnect(link& l) {
    if (!l.from_lock_path.empty() && l.at >= phase::handshaking)
      sd_bus_call_method_async(bus, nullptr, bluez::service, l.from_lock_path.c_str(), char_iface,
                               "StopNotify", nullptr, nullptr, "");
    sd_bus_call_method_async(bus, nullptr, bluez::service, l.path.c_str(), device_iface, "Disconnect",
                             nullptr, nullptr, "");
    end_session(l);
  }

  void end_session(link& l) {
    enter(l, phase::idle);
    l.released_at = steady::now();
    l.assembly.clear();
    l.session.end();
    l.events_in_flight = 0;
    l.state_pending = false;
    // Events of this session still in the journal: their answers have no
    // link to go to (the lock sends them again; the journal keeps one copy).
    std::erase_if(waiting, [&](const auto& w) { return w.second.lock == l.lock.id; });
    // Commands sent in this session and unanswered go again next time.
    for (auto& c : l.commands)
      c.sent_counter.reset();
  }

  /// The lock dropped the connection.
  void lost(link& l, const std::string& why) {
    if (l.at == phase::idle)
      return;
    bool mid = l.at != phase::ready || l.events_in_flight > 0 || l.assembly.in_assembly() > 0
               || std::any_of(l.commands.begin(), l.commands.end(),
                              [](const auto& c) { return c.sent_counter.has_value(); });
    if (mid) {
      spdlog::info("ble: lock {}: BLE connection lost mid-exchange ({}); retrying", l.lock.id, why);
      backoff(l);
      l.demand.advertised = true; // what it wanted to say is still to be said
    }
    end_session(l);
  }

  void failed(link& l, const std::string& why) {
    ++counters.connect_failures;
    spdlog::warn("ble: lock {} ({}): BLE connection failed while {}: {}; retry in {} ms", l.lock.id,
                 l.lock.address, to_string(l.at), why,
                 radio_scheduler::backoff(l.demand.failures + 1).count());
    backoff(l);
    if (l.connected)
      disconnect(l);
    else {
      end_session(l);
    }
  }

  void backoff(link& l) { radio_scheduler::failed(l.demand, steady::now()); }

  /// Whom to connect next (transports/ble_scheduler.hpp): urgent (an access
  /// query waits), then commands, then advertised events, then polls due;
  /// the longest waiting first.
  void schedule() {
    if (!adapter_present)
      return;
    std::vector<radio_scheduler::candidate> candidates;
    candidates.reserve(links.size());
    for (auto& [id, l] : links)
      candidates.push_back(
        {id, &l.demand, l.at == phase::idle && l.device_known, !l.commands.empty()});
    for (const auto& id : scheduler.pick(candidates, busy(), steady::now()))
      connect(links.find(id)->second);
  }

  ble_link_limits limits{ms{cfg.ble.connect_timeout_ms}, ms{cfg.ble.idle_release_ms},
                         ms{cfg.ble.max_hold_ms}};

  static ble_link_view view_of(const link& l) {
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

  /// Does what the link's state machine decided (transports/ble_link_state).
  void act(link& l, ble_step step, steady::time_point now) {
    switch (step) {
    case ble_step::none: return;
    case ble_step::fail_resolving:
      failed(l, "the lock service was not found (GATT UUID " + std::string{ble::service_uuid}
                  + ")");
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
      // An answer that never came: the lock and the gateway both start
      // again on the next connection.
      l.demand.advertised = true;
      l.demand.waiting_since = now;
      spdlog::info("ble: lock {}: no progress on its BLE link for 30 s; released, to start "
                   "again on the next connection",
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

  /// Timeouts, releases and command deadlines.
  thread_owner io_thread; ///< the BLE loop: the only thread touching sd-bus and the links

  void tick() {
    io_thread.check();
    auto now = steady::now();
    bool others_wait = false;
    for (auto& [id, l] : links)
      if (l.at == phase::idle && (l.demand.urgent || l.demand.advertised || !l.commands.empty()))
        others_wait = true;
    std::size_t connected_now = 0;
    for (auto& [id, l] : links) {
      if (auto dropped = l.assembly.expire(now_ms())) {
        counters.fragments_dropped += dropped;
        spdlog::warn("ble: lock {}: {} BLE message(s) missing fragments after {} ms; dropped (the "
                     "sender retries)",
                     l.lock.id, dropped, cfg.ble.fragment_timeout_ms);
      }
      // Commands whose deadline passed.
      for (auto it = l.commands.begin(); it != l.commands.end();) {
        if (now < it->deadline) {
          ++it;
          continue;
        }
        finish(*it, it->attempts == 0 ? command_outcome::kind::not_connected
                                      : command_outcome::kind::no_answer);
        it = l.commands.erase(it);
      }
      if (l.at == phase::ready)
        radio_scheduler::succeeded(l.demand);
      act(l, next_step(view_of(l), limits, others_wait, now), now);
      connected_now += l.at != phase::idle ? 1 : 0;
    }
    counters.connected_now = static_cast<std::uint32_t>(connected_now);
    if (connected_now > counters.connected_peak)
      counters.connected_peak = static_cast<std::uint32_t>(connected_now);
  }

  void take_inbox() {
    io_thread.check();
    std::deque<std::pair<request_id, events_reply>> done;
    std::deque<new_command> commands;
    std::optional<std::vector<ble_lock>> locks;
    {
      std::lock_guard guard{mutex};
      done.swap(completions);
      commands.swap(new_commands);
      locks.swap(new_locks);
    }
    if (locks)
      apply_locks(*locks);
    for (auto& [id, reply] : done) {
      auto w = waiting.find(id);
      if (w == waiting.end())
        continue;
      auto info = w->second;
      waiting.erase(w);
      auto l = links.find(info.lock);
      if (l == links.end() || l->second.generation != info.generation
          || l->second.at != phase::ready)
        continue; // that session is gone; the lock sends the events again
      auto& k = l->second;
      if (k.events_in_flight > 0)
        --k.events_in_flight;
      switch (reply.result) {
      case events_reply::kind::acked:
        send(k, ble::kind::events_answer,
             ble::encode_answer({info.re, 204, protocol::encode_events_ack(reply.acked_seq)}));
        break;
      case events_reply::kind::full:
        // As CoAP's 5.03 with Max-Age: keep the events, come back after this.
        send(k, ble::kind::events_answer,
             ble::encode_answer({info.re, 503, ble::encode_retry_after(cfg.full_retry_after_s)}));
        break;
      case events_reply::kind::failed:
        answer(k, ble::kind::events_answer, info.re, 500, reply.diagnostic);
        break;
      }
    }
    for (auto& c : commands) {
      auto l = links.find(c.lock);
      if (l == links.end()) {
        finish(c.command, command_outcome::kind::not_connected);
        continue;
      }
      auto& k = l->second;
      if (k.commands.empty() && k.at == phase::idle)
        k.demand.waiting_since = steady::now();
      k.commands.push_back(std::move(c.command));
      if (k.at == phase::ready)
        send_commands(k);
    }
  }

  sd_bus_slot* props_slot = nullptr;
  sd_bus_slot* added_slot = nullptr;
  sd_bus_slot* removed_slot = nullptr;
  steady::time_point next_bus_attempt{};
  bool bus_error_logged = false;

  /// Connects to the system bus and subscribes to BlueZ's signals; false
  /// (logged once) while there is no bus: CoAP locks go on meanwhile.
  bool attach() {
    auto now = steady::now();
    if (now < next_bus_attempt)
      return false;
    next_bus_attempt = now + std::chrono::seconds{5};
    int r = sd_bus_open_system(&bus);
    if (r < 0) {
      bus = nullptr;
      if (!bus_error_logged)
        spdlog::error("ble: cannot connect to the D-Bus system bus ({}); BLE locks wait for it "
                      "(apt-get install bluez dbus; systemctl start bluetooth)",
                      strerror(-r));
      bus_error_logged = true;
      return false;
    }
    if (bus_error_logged)
      spdlog::info("ble: connected to the D-Bus system bus");
    bus_error_logged = false;
    sd_bus_add_match(bus, &props_slot,
                     "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',"
                     "member='PropertiesChanged',path_namespace='/org/bluez'",
                     &impl::on_properties, this);
    sd_bus_match_signal(bus, &added_slot, bluez::service, "/", "org.freedesktop.DBus.ObjectManager",
                        "InterfacesAdded", &impl::on_objects, this);
    sd_bus_match_signal(bus, &removed_slot, bluez::service, "/", "org.freedesktop.DBus.ObjectManager",
                        "InterfacesRemoved", &impl::on_objects, this);
    next_adapter_check = steady::time_point{};
    return true;
  }

  void detach() {
    for (auto** slot : {&props_slot, &added_slot, &removed_slot}) {
      sd_bus_slot_unref(*slot);
      *slot = nullptr;
    }
    if (bus != nullptr)
      sd_bus_flush_close_unref(bus);
    bus = nullptr;
  }

  /// One pass of the BLE thread: bus events, timers, what to start next.
  void loop_once() {
    if (bus == nullptr && !attach()) {
      // Commands still end by their deadline; nothing else can happen.
      take_inbox();
      tick();
      pollfd wake{wake_fd, POLLIN, 0};
      ::poll(&wake, 1, 200);
      if (wake.revents & POLLIN) {
        std::uint64_t n = 0;
        [[maybe_unused]] auto got = ::read(wake_fd, &n, sizeof n);
      }
      return;
    }
    auto now = steady::now();
    if (now >= next_adapter_check) {
      scan_objects();
      start_discovery();
      next_adapter_check = now + std::chrono::seconds{adapter_present ? 30 : 5};
    }
    take_inbox();
    tick();
    schedule();
    int r = 0;
    bool progressed = false;
    while ((r = sd_bus_process(bus, nullptr)) > 0 && running)
      progressed = true;
    if (r < 0) {
      spdlog::error("ble: the system bus connection failed ({}); reconnecting", strerror(-r));
      reconnect_bus();
      return;
    }
    sd_bus_flush(bus);
    if (progressed)
      return; // what just happened may let a link be released or started now
    pollfd fds[2] = {{sd_bus_get_fd(bus), static_cast<short>(sd_bus_get_events(bus)), 0},
                     {wake_fd, POLLIN, 0}};
    int timeout = 50;
    std::uint64_t until = 0;
    if (sd_bus_get_timeout(bus, &until) >= 0 && until != UINT64_MAX) {
      timespec ts{};
      clock_gettime(CLOCK_MONOTONIC, &ts);
      std::uint64_t mono = std::uint64_t(ts.tv_sec) * 1'000'000 + std::uint64_t(ts.tv_nsec) / 1000;
      timeout = until <= mono ? 0 : std::min<int>(timeout, static_cast<int>((until - mono) / 1000));
    }
    ::poll(fds, 2, timeout);
    if (fds[1].revents & POLLIN) {
      std::uint64_t n = 0;
      [[maybe_unused]] auto got = ::read(wake_fd, &n, sizeof n);
    }
  }

  void loop() {
    io_thread.claim();
    while (running)
      contain("ble: the BLE thread", [&] { loop_once(); },
              [] { std::this_thread::sleep_for(std::chrono::milliseconds{100}); });
    if (bus != nullptr) {
      for (auto& [id, l] : links)
        if (l.at != phase::idle)
          disconnect(l);
      sd_bus_flush(bus);
    }
    detach();
  }

  void reconnect_bus() {
    for (auto& [id, l] : links) {
      if (l.at != phase::idle)
        end_session(l);
    }
    detach();
    adapter_present = false;
    discovering = false;
    next_adapter_check = steady::time_point{};
  }
};

ble_transport::ble_transport(ble_transport_config cfg)
  : impl_(std::make_unique<impl>(std::move(cfg))) {}

ble_transport::~ble_transport() { stop(); }

void ble_transport::start() {
  if (impl_->running.exchange(true))
    return;
  impl_->thread = std::thread{[this] {
    // Locks wait on this thread's answers (an access decision is made here).
    prefer_this_thread("ble: the I/O thread");
    impl_->loop();
  }};
}

void ble_transport::stop() {
  if (!impl_->running.exchange(false))
    return;
  impl_->wake();
  if (impl_->thread.joinable())
    impl_->thread.join();
}

void ble_transport::complete(request_id id, events_reply reply) {
  {
    std::lock_guard guard{impl_->mutex};
    impl_->completions.emplace_back(id, std::move(reply));
  }
  impl_->wake();
}

void ble_transport::send_command(const std::string& lock, std::vector<std::uint8_t> body,
                                 std::chrono::steady_clock::time_point deadline,
                                 command_callback done) {
  {
    std::lock_guard guard{impl_->mutex};
    impl_->new_commands.push_back({lock, pending_command{std::move(body), deadline, std::move(done), 0, std::nullopt}});
  }
  impl_->wake();
}

std::map<std::string, std::int64_t, std::less<>> ble_transport::last_seen() const {
  std::lock_guard guard{impl_->seen_mutex};
  return impl_->seen;
}

refusal_report ble_transport::refusals() const {
  return impl_->refusals.report();
}

void ble_transport::set_locks(std::vector<ble_lock> locks) {
  {
    std::lock_guard guard{impl_->mutex};
    impl_->new_locks = std::move(locks);
  }
  impl_->wake();
}

const ble_counters& ble_transport::counters() const noexcept { return impl_->counters; }

} // namespace lockbridge::transport
