#include "actors/journal.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/failure.hpp"

#include "actors/error.hpp"
#include "protocols/clock_guard.hpp"
#include "transports/priority.hpp"

namespace lockbridge {

caf::error validate(const journal_config& cfg) {
  if (!cfg.store || !cfg.reply)
    return caf::make_error(ec::config_invalid, "journal needs a store and a reply sink");
  if (cfg.retention_days == 0)
    return caf::make_error(ec::config_invalid, "retention_days must be at least 1");
  return caf::none;
}

void journal_state::hold(store::append_request&& batch) {
  if (held.size() >= max_held) {
    if (held_dropped++ % 1000 == 0)
      spdlog::error("journal: {} access decisions could not be journalled (the journal is full "
                    "or the disk refuses writes, and {} are already held); they are lost for "
                    "the audit stream (the doors had their answers)",
                    held_dropped, max_held);
    return;
  }
  if (!holding) {
    holding = true;
    spdlog::warn("journal: holding access decisions in memory until the journal takes them");
  }
  held.push_back(std::move(batch));
}

std::uint64_t journal_state::flush() {
  flush_scheduled = false;
  // Held gateway events go first: they are older than anything gathered.
  if (!held.empty()) {
    std::vector<store::append_request> all;
    all.reserve(held.size() + batches.size());
    std::move(held.begin(), held.end(), std::back_inserter(all));
    std::move(batches.begin(), batches.end(), std::back_inserter(all));
    request_ids.insert(request_ids.begin(), held.size(), 0);
    batches = std::move(all);
    held.clear();
  }
  bool removals_kept = !remove_delivered();
  if (batches.empty() && remove_upto == 0)
    return 0;
  auto before = cfg.store->next_key();
  std::vector<store::append_outcome> outcomes;
  try {
    outcomes = cfg.store->append(batches, remove_upto);
  } catch (const store::store_error& e) {
    if (e.why() != store::store_error::kind::storage) {
      // Nothing was committed; a damaged state ends the process (supervisor).
      spdlog::error("journal: commit failed: {}", e.what());
      batches.clear();
      request_ids.clear();
      throw;
    }
    storage_fault(e.what());
    return 0;
  }
  // (recovered() is one relaxed atomic load while the disk is healthy)
  if (cfg.health && cfg.health->recovered() && fault_logged) {
    fault_logged = false;
    spdlog::warn("journal: the disk takes writes again; locks' events are acknowledged as "
                 "before");
  }
  ++counters.commits;
  if (!removals_kept) // else their retry stays due
    retry_delay = std::chrono::milliseconds{0};
  remove_upto = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    const auto& o = outcomes[i];
    if (o.result == store::append_outcome::status::refused_full) {
      if (counters.refused_full++ % 1000 == 0)
        spdlog::warn("journal: full ({} of {} bytes); refusing events from {} until the "
                     "broker drains it (refused {} batches so far)",
                     cfg.store->figures().bytes, cfg.store->figures().limit_bytes,
                     batches[i].lock_id, counters.refused_full);
    }
    counters.duplicates += o.duplicates;
    counters.stored += o.stored;
    if (request_ids[i] == 0 && o.result == store::append_outcome::status::refused_full)
      hold(std::move(batches[i]));
    else if (request_ids[i] != 0) // the gateway's own events (id 0) wait for no answer
      cfg.reply(request_ids[i], o);
  }
  batches.clear();
  request_ids.clear();
  if (holding && held.empty()) {
    holding = false;
    spdlog::info("journal: the held access decisions are journalled");
  }
  auto after = cfg.store->next_key();
  return after > before ? after : 0;
}

void journal_state::storage_fault(const std::string& what) {
  // Nothing was committed: every lock of the group is told to hold its
  // events and retry (5.03 with Max-Age), removals wait for the next try.
  bool first = !cfg.health || cfg.health->fail(what, protocol::unix_ms_now());
  ++counters.refused_full;
  // A disk at the edge flaps (a small commit fits, the next does not): one
  // line per 10 s at most, and "writable again" only after such a line.
  auto now = std::chrono::steady_clock::now();
  if ((first && now - fault_logged_at >= std::chrono::seconds{10})
      || counters.refused_full % 1000 == 0) {
    fault_logged_at = now;
    fault_logged = true;
    spdlog::error("journal: the disk refuses writes ({}); locks are told to retry later (5.03), "
                  "access decisions go on; free space in the state directory ({} faults so far)",
                  what, cfg.health ? cfg.health->get().faults : 0);
  }
  for (std::size_t i = 0; i < batches.size(); ++i) {
    if (request_ids[i] == 0) {
      hold(std::move(batches[i]));
      continue;
    }
    store::append_outcome o;
    o.result = store::append_outcome::status::refused_full;
    o.acked_seq = cfg.store->progress(batches[i].lock_id);
    cfg.reply(request_ids[i], o);
  }
  batches.clear();
  request_ids.clear();
  back_off();
}

void journal_state::back_off() {
  retry_delay = std::min<std::chrono::milliseconds>(
    std::max(retry_delay * 2, std::chrono::milliseconds{500}), std::chrono::seconds{30});
}

bool journal_state::remove_delivered() {
  try {
    if (audit_remove_upto > 0 && cfg.audit) {
      cfg.audit->remove_upto(audit_remove_upto);
      audit_remove_upto = 0;
    }
    for (; !results_delivered.empty() && cfg.results; results_delivered.pop_back())
      cfg.results->remove(results_delivered.back());
  } catch (const std::exception& e) {
    if (auto* se = dynamic_cast<const store::store_error*>(&e);
        se != nullptr && se->why() == store::store_error::kind::storage) {
      if (cfg.health)
        cfg.health->fail(e.what(), protocol::unix_ms_now());
      back_off();
      return false; // kept for the retry
    }
    spdlog::error("journal: removing delivered audit records or results failed ({}); they "
                  "are sent again",
                  e.what());
    audit_remove_upto = 0;
    results_delivered.clear();
  }
  return true;
}

void journal_state::purge() {
  auto cutoff = std::chrono::duration_cast<std::chrono::milliseconds>(
                  (std::chrono::system_clock::now() - std::chrono::hours{24} * cfg.retention_days)
                    .time_since_epoch())
                  .count();
  std::uint64_t removed = 0;
  try {
    removed = cfg.store->purge_received_before(cutoff);
  } catch (const store::store_error& e) {
    if (e.why() != store::store_error::kind::storage)
      throw;
    spdlog::error("journal: retention could not purge ({}); tried again in an hour", e.what());
    return;
  }
  if (removed > 0) {
    counters.purged_retention += removed;
    spdlog::warn("journal: retention purged {} undelivered events older than {} days "
                 "({} purged since start)",
                 removed, cfg.retention_days, counters.purged_retention);
    if (cfg.on_purged)
      cfg.on_purged(removed);
  }
}

void journal_state::quarantine(bool outbox, const std::vector<std::uint64_t>& keys) {
  if (keys.empty())
    return;
  try {
    auto moved = outbox ? cfg.results->quarantine(keys) : cfg.store->quarantine(keys);
    if (moved > 0 && cfg.vault) {
      cfg.vault->quarantined += moved;
      audit(*cfg.vault, "quarantine",
            {{"table", outbox ? "outbox" : "journal"}, {"entries", moved},
             {"first_key", keys.front()}});
    }
  } catch (const std::exception& e) {
    spdlog::error("journal: quarantine failed: {}", e.what());
  }
}

void journal_state::record(const std::string& action, const std::string& detail_json) {
  if (!cfg.vault)
    return;
  try {
    auto detail = nlohmann::json::parse(detail_json, nullptr, false);
    audit(*cfg.vault, action, detail.is_object() ? std::move(detail) : nlohmann::json::object());
  } catch (const std::exception& e) {
    spdlog::error("journal: the audit record \"{}\" could not be written: {}", action, e.what());
  }
}

namespace {

/// A group commit: stores what gathered, answers the readers it concerns,
/// and arms the retry of removals a failing disk refused.
void on_flush(journal_actor::stateful_pointer<journal_state> self) {
  auto& st = self->state;
  if (auto next = st.flush(); next > 0)
    std::erase_if(st.readers, [next](auto& reader) {
      if (reader.first >= next)
        return false;
      reader.second.deliver(next);
      return true;
    });
  // Removals refused by a failing disk are tried again after a delay
  // (a lock's retry may come first and carry them along).
  if ((st.removals_wait() || !st.held.empty()) && !st.retry_scheduled
      && (st.retry_delay.count() > 0 || !st.held.empty())) {
    st.retry_scheduled = true;
    auto delay = st.retry_delay.count() > 0 ? st.retry_delay : std::chrono::milliseconds{5000};
    self->delayed_send(self, delay, atom::retry_v);
  }
}

} // namespace

journal_actor::behavior_type journal(journal_actor::stateful_pointer<journal_state> self,
                                     journal_config cfg) {
  log_exceptions(self);
  self->state.cfg = std::move(cfg);
  // Detached: this runs on the journal's own thread. Locks wait for its
  // commits.
  transport::prefer_this_thread("journal: the commit thread");
  self->state.purge();
  self->delayed_send(self, self->state.cfg.purge_interval, atom::purge_v);
  auto schedule_flush = [self] {
    if (!self->state.flush_scheduled) {
      self->state.flush_scheduled = true;
      self->send(self, atom::flush_v);
    }
  };
  return {
    [self, schedule_flush](atom::append, std::uint64_t request, append_ptr batch) {
      self->state.request_ids.push_back(request);
      self->state.batches.push_back(std::move(*batch));
      schedule_flush();
    },
    [self, schedule_flush](atom::remove, std::uint64_t upto) {
      self->state.remove_upto = std::max(self->state.remove_upto, upto);
      schedule_flush();
    },
    [self, schedule_flush](atom::remove, atom::audit, std::uint64_t upto) {
      self->state.audit_remove_upto = std::max(self->state.audit_remove_upto, upto);
      schedule_flush();
    },
    [self, schedule_flush](atom::remove, atom::result, std::uint64_t number) {
      self->state.results_delivered.push_back(number);
      schedule_flush();
    },
    [self](atom::quarantine, atom::events, const keys_ptr& keys) {
      if (keys)
        self->state.quarantine(false, *keys);
    },
    [self](atom::quarantine, atom::result, const keys_ptr& numbers) {
      if (numbers)
        self->state.quarantine(true, *numbers);
    },
    [self](atom::audit, const std::string& action, const std::string& detail) {
      self->state.record(action, detail);
    },
    [self](atom::flush) { on_flush(self); },
    [self, schedule_flush](atom::retry) {
      self->state.retry_scheduled = false;
      schedule_flush();
    },
    [self](atom::purge) {
      self->state.purge();
      self->delayed_send(self, self->state.cfg.purge_interval, atom::purge_v);
    },
    [self](atom::committed, std::uint64_t from) -> caf::result<std::uint64_t> {
      auto next = self->state.cfg.store->next_key();
      if (next > from)
        return next;
      auto promise = self->make_response_promise<std::uint64_t>();
      self->state.readers.emplace_back(from, promise);
      return promise;
    },
    [self](atom::figures) -> journal_figures {
      auto f = self->state.cfg.store->figures();
      f.refused_full = self->state.counters.refused_full;
      f.purged_retention = self->state.counters.purged_retention;
      f.duplicates = self->state.counters.duplicates;
      f.stored = self->state.counters.stored;
      f.commits = self->state.counters.commits;
      return f;
    },
  };
}

} // namespace lockbridge
