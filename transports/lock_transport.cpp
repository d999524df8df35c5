#include "transports/lock_transport.hpp"

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

} // namespace lockbridge::transport
