#include "actors/lock_session.hpp"

#include <chrono>

#include <caf/all.hpp>

#include "actors/error.hpp"
#include "actors/failure.hpp"
#include "protocols/cloud_messages.hpp"

namespace lockbridge {

caf::error validate(const lock_session_config& cfg) {
  if (!protocol::is_valid_id(cfg.lock_id))
    return caf::make_error(ec::config_invalid, "invalid lock id");
  if (!cfg.pseudonyms)
    return caf::make_error(ec::config_invalid, "lock session needs a pseudonymiser");
  return caf::none;
}

store::append_request lock_session_state::pseudonymise(const protocol::event_batch& batch) const {
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  store::append_request req{cfg.lock_id, {}};
  req.records.reserve(batch.events.size());
  for (const auto& ev : batch.events) {
    protocol::journal_record r;
    r.lock = cfg.lock_id;
    r.seq = ev.seq;
    r.ts = ev.ts;
    r.type = ev.type;
    r.door = ev.door;
    if (ev.cred)
      r.cred = (*cfg.pseudonyms)(*ev.cred);
    r.detail = ev.detail;
    r.received_at = now;
    req.records.push_back(std::move(r));
  }
  return req;
}

lock_session_actor::behavior_type
lock_session(lock_session_actor::stateful_pointer<lock_session_state> self,
             lock_session_config cfg, journal_actor journal) {
  log_exceptions(self);
  self->state.cfg = std::move(cfg);
  self->state.journal = std::move(journal);
  return {
    [self](atom::events, std::uint64_t request, batch_ptr batch) {
      ++self->state.batches;
      auto req = std::make_shared<store::append_request>(self->state.pseudonymise(*batch));
      self->send(self->state.journal, atom::append_v, request, append_ptr{std::move(req)});
    },
    [self](atom::decided, access_record_ptr rec) {
      // The gateway's own event: stream "{lock}.access", numbered by the
      // journal; the answer already went to the lock, so nobody waits for
      // this commit (request id 0 is never a lock's request).
      auto& st = self->state;
      auto req = std::make_shared<store::append_request>();
      req->lock_id = st.cfg.lock_id + ".access";
      req->assign_seq = true;
      protocol::journal_record r;
      r.lock = req->lock_id;
      r.ts = rec->request.ts;
      r.type = rec->decision.allow ? "access_granted" : "access_denied";
      r.door = rec->request.door;
      r.cred = (*st.cfg.pseudonyms)(rec->request.cred);
      r.detail = std::string{protocol::to_string(rec->decision.reason)};
      r.received_at = rec->decided_at;
      req->records.push_back(std::move(r));
      self->send(st.journal, atom::append_v, std::uint64_t{0}, append_ptr{std::move(req)});
    },
  };
}

} // namespace lockbridge
