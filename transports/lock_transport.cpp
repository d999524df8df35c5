#include "transports/lock_transport.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "protocols/log_fields.hpp"

namespace lockbridge::transport {

access_outcome answer_access(const access_handler& decide, const std::string& lock,
                             std::span<const std::uint8_t> payload) {
  access_outcome out;
  auto text = [&out](int code, const std::string& diagnostic) {
    out.code = code;
    out.body.assign(diagnostic.begin(), diagnostic.end());
    return out;
  };
  auto request = protocol::decode_access_request(payload);
  if (!request) {
    out.error = request.error().to_string();
    return text(400, out.error);
  }
  if (!decide)
    return text(503, "access decisions are not configured on this gateway");
  try {
    out.decision = decide(lock, *request);
  } catch (const std::exception& e) {
    out.error = e.what();
    return text(500, "decision failed; retry");
  }
  out.code = 205;
  out.body = protocol::encode_access_answer(out.decision);
  out.request = std::move(*request);
  return out;
}

bool warn_limiter::allow(std::uint64_t& suppressed) {
  auto now = std::chrono::steady_clock::now();
  if (now < next) {
    ++held_back;
    return false;
  }
  next = now + std::chrono::seconds{10};
  suppressed = held_back;
  held_back = 0;
  return true;
}

events_outcome check_events(std::string_view via, const std::string& lock,
                            std::span<const std::uint8_t> payload, std::size_t total,
                            warn_limiter& limiter) {
  events_outcome out;
  if (total > protocol::lock_limits::max_payload_bytes) {
    out.code = 413;
    out.error = "payload exceeds " + std::to_string(protocol::lock_limits::max_payload_bytes)
                + " bytes";
  } else if (auto batch = protocol::decode_event_batch(payload)) {
    out.batch = std::move(*batch);
    return out;
  } else {
    out.code = 400;
    out.error = batch.error().to_string();
  }
  std::uint64_t suppressed = 0;
  if (limiter.allow(suppressed))
    spdlog::warn("{}: lock {} sent a bad event batch: {}{}", via, lock, out.error,
                 suppressed > 0 ? fmt::format(" ({} more bad batches from it not logged in the "
                                              "last 10 s)",
                                              suppressed)
                                : std::string{});
  return out;
}

std::optional<events_reply> hand_on_events(const events_handler& on_events, request_id id,
                                           const std::string& lock, protocol::event_batch batch) {
  std::string why; // set only on failure: nothing allocated on the way of every batch
  if (!on_events) {
    why = "no journal is attached";
  } else {
    try {
      on_events(id, lock, std::move(batch));
      return std::nullopt;
    } catch (const std::exception& e) {
      why = e.what();
    } catch (...) {
      why = "unknown exception";
    }
  }
  try {
    spdlog::error("lock {}: its events could not be handed to the journal ({}); answered "
                  "\"retry\"",
                  lock, why);
  } catch (...) {
  }
  events_reply failed;
  failed.result = events_reply::kind::failed;
  failed.diagnostic = "gateway could not take the events; retry";
  return failed;
}

namespace {

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

void refusal_log::refused(std::string_view lock, std::string_view reason, std::string_view peer) {
  std::lock_guard guard{mutex_};
  auto it = report_.locks.find(lock);
  if (it == report_.locks.end())
    it = report_.locks.emplace(std::string{lock}, lock_refusal{}).first;
  it->second.reason = reason;
  it->second.peer = peer;
  it->second.at_ms = unix_ms();
  ++it->second.count;
}

void refusal_log::stranger(std::string_view identity, std::string_view peer) {
  auto printable = protocol::printable_text(identity);
  std::lock_guard guard{mutex_};
  auto& list = report_.strangers;
  auto it = std::find_if(list.begin(), list.end(),
                         [&](const auto& s) { return s.identity == printable; });
  transport::stranger entry{printable, std::string{peer}, unix_ms(), 1};
  if (it != list.end()) {
    entry.count = it->count + 1;
    list.erase(it);
  } else if (list.size() >= max_strangers) {
    list.pop_back();
  }
  list.insert(list.begin(), std::move(entry));
}

refusal_report refusal_log::report() const {
  std::lock_guard guard{mutex_};
  return report_;
}

void transport_set::route(const std::string& lock, std::size_t member) {
  std::lock_guard guard{mutex_};
  routes_[lock] = member;
}

void transport_set::set_routes(std::map<std::string, std::size_t, std::less<>> routes) {
  std::lock_guard guard{mutex_};
  routes_ = std::move(routes);
}

void transport_set::start() {
  for (auto& m : members_)
    m->start();
}

void transport_set::stop() {
  for (auto& m : members_)
    m->stop();
}

void transport_set::complete(request_id id, events_reply reply) {
  auto index = static_cast<std::size_t>(id >> 56);
  if (index < members_.size())
    members_[index]->complete(id, std::move(reply));
}

void transport_set::send_command(const std::string& lock, std::vector<std::uint8_t> body,
                                 std::chrono::steady_clock::time_point deadline,
                                 command_callback done) {
  std::size_t index = members_.size();
  {
    std::lock_guard guard{mutex_};
    if (auto it = routes_.find(lock); it != routes_.end())
      index = it->second;
  }
  if (index >= members_.size()) {
    command_outcome o;
    o.result = command_outcome::kind::not_connected;
    done(std::move(o));
    return;
  }
  members_[index]->send_command(lock, std::move(body), deadline, std::move(done));
}

std::map<std::string, std::int64_t, std::less<>> transport_set::last_seen() const {
  std::map<std::string, std::int64_t, std::less<>> out;
  for (const auto& m : members_)
    out.merge(m->last_seen());
  return out;
}

refusal_report transport_set::refusals() const {
  refusal_report out;
  for (const auto& m : members_) {
    auto r = m->refusals();
    out.locks.merge(r.locks);
    out.strangers.insert(out.strangers.end(), r.strangers.begin(), r.strangers.end());
  }
  std::stable_sort(out.strangers.begin(), out.strangers.end(),
                   [](const auto& a, const auto& b) { return a.at_ms > b.at_ms; });
  return out;
}

std::map<std::string, std::string, std::less<>> transport_set::transport_of() const {
  std::map<std::string, std::string, std::less<>> out;
  std::lock_guard guard{mutex_};
  for (const auto& [lock, index] : routes_)
    if (index < members_.size())
      out.emplace(lock, std::string{members_[index]->kind()});
  return out;
}

} // namespace lockbridge::transport
