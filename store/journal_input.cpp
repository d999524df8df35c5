#include "store/journal_input.hpp"

namespace lockbridge::store {

append_request journal_batch(const std::string& lock, const protocol::event_batch& batch,
                             const pseudonym_source& pseudonyms, std::int64_t now_ms) {
  append_request req{lock, {}};
  req.records.reserve(batch.events.size());
  for (const auto& ev : batch.events) {
    protocol::journal_record r;
    r.lock = lock;
    r.seq = ev.seq;
    r.ts = ev.ts;
    r.type = ev.type;
    r.door = ev.door;
    if (ev.cred)
      r.cred = pseudonyms(*ev.cred);
    r.detail = ev.detail;
    r.received_at = now_ms;
    req.records.push_back(std::move(r));
  }
  return req;
}

append_request journal_decision(const std::string& lock, const protocol::access_request& request,
                                const protocol::access_decision& decision,
                                std::int64_t decided_at, const pseudonym_source& pseudonyms) {
  append_request req;
  req.lock_id = lock + ".access";
  req.assign_seq = true;
  protocol::journal_record r;
  r.lock = req.lock_id;
  r.ts = request.ts;
  r.type = decision.allow ? "access_granted" : "access_denied";
  r.door = request.door;
  r.cred = pseudonyms(request.cred);
  r.detail = std::string{protocol::to_string(decision.reason)};
  r.received_at = decided_at;
  req.records.push_back(std::move(r));
  return req;
}

} // namespace lockbridge::store
