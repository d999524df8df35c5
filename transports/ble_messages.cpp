// The messages of a BLE session: notifications reassembled, judged by the
// session (forged, replayed, the handshake, or authentic) and dispatched by
// kind; and the gateway's own messages sealed, fragmented and written.
// Part of ble_links (transports/ble_links.hpp), on the BLE thread.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "protocols/clock_guard.hpp"
#include "transports/ble_links.hpp"

namespace lockbridge::transport {

namespace ble = protocol::ble;

void ble_links::notification(const std::string& path, const ble::bytes& value) {
  auto* l = link_of_path(path);
  // Other devices' and other services' characteristics (a phone, a battery
  // level) are none of our business.
  if (l == nullptr ? bus_.uuid_of(path) != ble::from_lock_uuid : path != l->from_lock_path) {
    spdlog::debug("ble: a value change on {} (not the lock service); ignored", path);
    return;
  }
  if (l == nullptr)
    return stranger(path);
  if (l->at != phase::handshaking && l->at != phase::ready) {
    // Late: the lock spoke as the link was released. It says it again.
    spdlog::debug("ble: lock {}: a BLE notification outside a session; ignored", l->lock.id);
    return;
  }
  l->last_activity = steady::now();
  auto o = l->assembly.add(value, protocol::unix_ms_now());
  using what = ble::reassembler::outcome::what;
  if (o.result == what::invalid) {
    ++counters_.fragments_dropped;
    spdlog::warn("ble: lock {}: bad BLE fragment: {}; dropped", l->lock.id, o.diagnostic);
    return;
  }
  if (o.result == what::duplicate)
    spdlog::debug("ble: lock {}: a BLE fragment came twice; ignored", l->lock.id);
  if (o.result == what::complete)
    message(*l, o.message);
}

/// The lock service spoken by a device no lock is configured for: refused,
/// counted, and said at most once a minute per address.
void ble_links::stranger(const std::string& path) {
  ++counters_.refused_unconfigured;
  auto address = bluez::address_of_path(path);
  refusals_.stranger(address, address);
  auto now = steady::now();
  if (unconfigured_logged_.size() > 1000)
    unconfigured_logged_.clear();
  auto& last = unconfigured_logged_[address];
  if (last != steady::time_point{} && now - last <= std::chrono::minutes{1})
    return;
  last = now;
  spdlog::warn("ble: a message from {}, which is no configured lock; refused (add it as a "
               "[[locks]] entry with transport = \"ble\" if it is one)",
               address);
}

/// A reassembled message: judged by the session (refused, the session
/// established, or authentic and dispatched).
void ble_links::message(ble_link& l, const ble::bytes& bytes) {
  using verdict = ble_session::verdict_kind;
  auto v = l.session.accept(l.lock.psk, l.lock.id, bytes);
  if (v.result == verdict::forged || v.result == verdict::replayed) {
    bool forged = v.result == verdict::forged;
    ++(forged ? counters_.refused_forged : counters_.refused_replayed);
    refusals_.refused(l.lock.id, forged ? "forged" : "replayed", l.lock.address);
    spdlog::warn("ble: lock {}: {}", l.lock.id, v.reason);
    return;
  }
  if (v.result == verdict::established) {
    enter(l, phase::ready);
    ++counters_.connections;
    // A new session: the lock's state is asked for each time (as a CoAP
    // lock's is observed), then what waits for it goes out.
    l.state_pending = send(l, ble::kind::state_request, {});
    send_commands(l);
    return;
  }
  ++counters_.messages;
  l.last_seen_ms = protocol::unix_ms_now();
  {
    std::lock_guard guard{seen_mutex_};
    seen_[l.lock.id] = l.last_seen_ms;
  }
  authentic(l, *v.message);
}

/// An authentic message from a lock (its seal and counter checked),
/// dispatched by kind.
void ble_links::authentic(ble_link& l, const ble::opened& m) {
  switch (m.what) {
  case ble::kind::events: return events_message(l, m);
  case ble::kind::access: return access_query(l, m);
  case ble::kind::time_request: {
    const auto& h = cfg_.handlers;
    auto now = h.clock ? h.clock() : protocol::unix_ms_now();
    send(l, ble::kind::time_answer,
         ble::encode_answer({m.counter, 205, protocol::encode_time(now)}));
    return;
  }
  case ble::kind::state: return state_message(l, m);
  case ble::kind::command_answer: return command_answer(l, m);
  case ble::kind::idle: return idle_message(l, m);
  default: return;
  }
}

/// Events: decoded and handed on; answered once the journal has them (or at
/// once, "retry", when they could not be handed on).
void ble_links::events_message(ble_link& l, const ble::opened& m) {
  auto checked = check_events("ble", l.lock.id, m.body, m.body.size(), l.bad_batch_warnings);
  if (!checked.batch) {
    ++counters_.bad_messages;
    answer(l, ble::kind::events_answer, m.counter, static_cast<std::uint16_t>(checked.code),
           checked.error);
    return;
  }
  l.lock_idle = false;
  auto id = next_id_++;
  waiting_[id] = {l.lock.id, l.generation, m.counter};
  ++l.events_in_flight;
  if (auto failed = hand_on_events(cfg_.handlers.on_events, id, l.lock.id,
                                   std::move(*checked.batch)))
    complete(id, *failed);
}

/// An access query: decided here and answered at once.
void ble_links::access_query(ble_link& l, const ble::opened& m) {
  const auto& h = cfg_.handlers;
  auto out = answer_access(h.on_access, l.lock.id, m.body);
  if (out.code == 400) {
    ++counters_.bad_messages;
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
void ble_links::state_message(ble_link& l, const ble::opened& m) {
  auto state = protocol::decode_lock_state(m.body);
  if (!state) {
    ++counters_.bad_messages;
    spdlog::warn("ble: lock {}: bad state over BLE: {}; ignored", l.lock.id,
                 state.error().to_string());
    return;
  }
  l.state_pending = false;
  if (cfg_.handlers.on_state)
    cfg_.handlers.on_state(l.lock.id, *state);
}

/// The lock's answer to a command of this session: its outcome goes back.
void ble_links::command_answer(ble_link& l, const ble::opened& m) {
  auto a = ble::decode_answer(m.body);
  if (!a) {
    ++counters_.bad_messages;
    spdlog::warn("ble: lock {}: bad command answer over BLE: {}", l.lock.id,
                 a.error().to_string());
    return;
  }
  auto it = std::find_if(l.commands.begin(), l.commands.end(),
                         [&](const auto& c) { return c.sent_counter == a->re; });
  if (it == l.commands.end()) {
    spdlog::debug("ble: lock {}: a BLE command answer for no waiting command; ignored",
                  l.lock.id);
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

/// The lock has nothing more to say. Body: the counter of the last gateway
/// message it had when it said so; an idle sent before our latest request
/// does not count.
void ble_links::idle_message(ble_link& l, const ble::opened& m) {
  if (m.body.size() != 8) {
    ++counters_.bad_messages;
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

void ble_links::answer(ble_link& l, ble::kind k, std::uint64_t re, std::uint16_t code,
                       const std::string& text) {
  send(l, k, ble::encode_answer({re, code, ble::bytes(text.begin(), text.end())}));
}

/// Seals (or, for hello, frames) and writes one message; false when the
/// link failed.
bool ble_links::send(ble_link& l, ble::kind k, const ble::bytes& body) {
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

/// One fragment, written without waiting: a failure, now or in BlueZ's
/// answer, ends the connection (the lock and the gateway both retry).
bool ble_links::write(ble_link& l, const ble::bytes& value) {
  int r = bus_.write(l.to_lock_path, value,
                     [this, lock = l.lock.id, generation = l.generation](const auto& e) {
                       auto* k = link_of(lock, generation);
                       if (e.failed() && k != nullptr && k->at != phase::idle)
                         lost(*k, "writing to the lock failed: " + e.message);
                     });
  if (r < 0) {
    lost(l, std::string{"writing to the lock failed: "} + std::strerror(-r));
    return false;
  }
  return true;
}

void ble_links::send_commands(ble_link& l) {
  for (auto& c : l.commands) {
    if (c.sent_counter)
      continue;
    ++c.attempts;
    if (!send(l, ble::kind::command, c.body))
      return;
    c.sent_counter = l.session.last_sent();
  }
}

} // namespace lockbridge::transport
