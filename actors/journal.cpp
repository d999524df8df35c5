#include "actors/journal.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"

namespace lockbridge {

caf::error validate(const journal_config& cfg) {
  if (!cfg.store || !cfg.reply)
    return caf::make_error(ec::config_invalid, "journal needs a store and a reply sink");
  if (cfg.retention_days == 0)
    return caf::make_error(ec::config_invalid, "retention_days must be at least 1");
  return caf::none;
}

std::uint64_t journal_state::flush() {
  flush_scheduled = false;
  if (batches.empty() && remove_upto == 0)
    return 0;
  auto before = cfg.store->next_key();
  std::vector<store::append_outcome> outcomes;
  try {
    outcomes = cfg.store->append(batches, remove_upto);
  } catch (const std::exception& e) {
    // Nothing was committed: the locks get no acknowledgement and retry.
    spdlog::error("journal: commit failed: {}", e.what());
    batches.clear();
    request_ids.clear();
    throw;
  }
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
    cfg.reply(request_ids[i], o);
  }
  batches.clear();
  request_ids.clear();
  auto after = cfg.store->next_key();
  return after > before ? after : 0;
}

void journal_state::purge() {
  auto cutoff = std::chrono::duration_cast<std::chrono::milliseconds>(
                  (std::chrono::system_clock::now() - std::chrono::hours{24} * cfg.retention_days)
                    .time_since_epoch())
                  .count();
  auto removed = cfg.store->purge_received_before(cutoff);
  if (removed > 0) {
    counters.purged_retention += removed;
    spdlog::warn("journal: retention purged {} undelivered events older than {} days "
                 "({} purged since start)",
                 removed, cfg.retention_days, counters.purged_retention);
    if (cfg.on_purged)
      cfg.on_purged(removed);
  }
}

journal_actor::behavior_type journal(journal_actor::stateful_pointer<journal_state> self,
                                     journal_config cfg, uplink_actor uplink) {
  self->state.cfg = std::move(cfg);
  self->state.uplink = std::move(uplink);
  // Detached: this runs on the journal's own thread. Locks wait for its
  // commits, so ask the scheduler to prefer it (needs CAP_SYS_NICE or root;
  // without, it keeps the process's priority).
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), -10) != 0)
    spdlog::debug("journal: could not raise the thread's priority: {}", std::strerror(errno));
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
    [self](atom::flush) {
      if (auto next = self->state.flush(); next > 0)
        self->send(self->state.uplink, atom::committed_v, next);
    },
    [self](atom::purge) {
      self->state.purge();
      self->delayed_send(self, self->state.cfg.purge_interval, atom::purge_v);
    },
    [self](atom::figures) -> journal_figures {
      auto f = self->state.cfg.store->figures();
      f.refused_full = self->state.counters.refused_full;
      f.purged_retention = self->state.counters.purged_retention;
      f.duplicates = self->state.counters.duplicates;
      f.stored = self->state.counters.stored;
      return f;
    },
  };
}

} // namespace lockbridge
