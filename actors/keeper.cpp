#include "actors/keeper.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/failure.hpp"

#include <set>

#include "actors/error.hpp"
#include "protocols/clock_guard.hpp"
#include "store/quarantine.hpp"
#include "protocols/json_input.hpp"

namespace lockbridge {

using protocol::unix_ms_now;

namespace {

constexpr std::int64_t day_ms = 86'400'000;

/// The audit name of a subject: a pseudonym in the epoch in force (a label
/// no credential identifier can take: those never hold a NUL).
std::string subject_pseudonym(const store::pseudonym_source& p, const std::string& subject) {
  return p(std::string{"\0subject\0", 9} + subject);
}

} // namespace

caf::error validate(const keeper_config& cfg) {
  if (!cfg.vault || !cfg.publish_result)
    return caf::make_error(ec::config_invalid, "keeper needs the vault and a result sink");
  if (cfg.retention_days == 0 || cfg.epoch_days == 0 || cfg.reseal_batch == 0)
    return caf::make_error(ec::config_invalid, "keeper: retention, epoch length and re-seal "
                                               "batch must be positive");
  return caf::none;
}

void keeper_state::tick() {
  auto& v = *cfg.vault;
  auto now = unix_ms_now();
  auto cutoff = now - static_cast<std::int64_t>(cfg.retention_days) * day_ms;
  try {
    auto current = v.epochs->current();
    if (now - current.created_at >= static_cast<std::int64_t>(cfg.epoch_days) * day_ms) {
      auto next = v.epochs->rotate(now);
      v.pseudonyms->refresh();
      spdlog::info("keys: pseudonym epoch {} began (epoch {} is {} days old)", next.epoch,
                   current.epoch, (now - current.created_at) / day_ms);
      audit(v, "pseudonym_epoch_rotated",
            {{"epoch", next.epoch}, {"previous", current.epoch}, {"reason", "schedule"}});
    }
    auto destroyed = v.epochs->destroy_ended_before(cutoff);
    if (!destroyed.empty()) {
      v.pseudonyms->refresh();
      v.epochs_destroyed += destroyed.size();
      for (auto e : destroyed) {
        spdlog::info("keys: pseudonym epoch {} ended more than {} days ago; its key is destroyed "
                     "and its pseudonyms can no longer be linked",
                     e, cfg.retention_days);
        audit(v, "pseudonym_epoch_destroyed", {{"epoch", e}});
      }
    }
    if (auto n = v.audit->purge_before(cutoff); n > 0) {
      v.audit_purged += n;
      spdlog::warn("audit: retention purged {} undelivered audit records older than {} days", n,
                   cfg.retention_days);
      audit(v, "retention_purge", {{"table", "audit"}, {"records", n}});
    }
    v.commands->forget_expired(now);
    if (auto n = store::purge_quarantine_before(*v.env, cutoff); n > 0) {
      v.quarantine_purged += n;
      spdlog::info("quarantine: retention purged {} values older than {} days", n,
                   cfg.retention_days);
      audit(v, "retention_purge", {{"table", "quarantine"}, {"records", n}});
    }
  } catch (const std::exception& e) {
    spdlog::error("keeper: periodic work failed: {}", e.what());
  }
}

std::string keeper_state::answer(const protocol::command_result& r) {
  auto reply = keep_reply(cfg.vault.get(), "keeper", cfg.site, cfg.gateway, r);
  cfg.publish_result(reply);
  return reply->payload;
}

std::string keeper_state::refuse(protocol::command_result& r, const std::string& payload,
                                 const input_error& error) {
  r.id = protocol::command_id_of(payload).value_or("");
  r.status = "error";
  r.error = error;
  spdlog::warn("{} refused: {}: {}", r.command, error.field, error.message);
  return answer(r);
}

std::string keeper_state::erase_subject(const std::string& payload) {
  auto& v = *cfg.vault;
  protocol::command_result r;
  r.command = "erase_subject";
  r.ts = unix_ms_now();
  auto request = protocol::decode_erase_subject(payload);
  if (!request)
    return refuse(r, payload, request.error());
  r.id = request->id;
  try {
    // The subject's pseudonyms must be computed before its credentials go.
    auto label = subject_pseudonym(*v.pseudonyms, request->subject);
    auto keys = v.credentials->erase_subject(request->subject);
    std::set<std::string> pseudonyms;
    for (const auto& key : keys)
      for (auto& p : v.pseudonyms->all_of(key))
        pseudonyms.insert(std::move(p));
    std::uint64_t events = 0;
    if (!pseudonyms.empty())
      events = v.events->erase_matching([&](const protocol::journal_record& rec) {
        return rec.cred && pseudonyms.contains(*rec.cred);
      });
    ++v.erasures;
    auto epochs = v.epochs->all();
    nlohmann::json receipt{{"subject", label},
                           {"credentials_removed", keys.size()},
                           {"lookup_entries_removed", keys.size()},
                           {"pending_events_removed", events},
                           {"epochs_searched", epochs.size()},
                           {"erased_at", unix_ms_now()}};
    audit(v, "erase_subject", receipt);
    spdlog::info("erase_subject {}: {} credentials and {} pending events removed", request->id,
                 keys.size(), events);
    r.status = "ok";
    r.receipt = protocol::dump_safe(receipt);
  } catch (const std::exception& e) {
    spdlog::error("erase_subject {}: failed: {}", request->id, e.what());
    r.status = "error";
    r.detail = std::string{"storage failure: "} + e.what() + "; nothing was committed";
  }
  return answer(r);
}

std::string keeper_state::rotate_keys(const std::string& payload) {
  auto& v = *cfg.vault;
  protocol::command_result r;
  r.command = "rotate_keys";
  r.ts = unix_ms_now();
  auto request = protocol::decode_rotate_keys(payload);
  if (!request)
    return refuse(r, payload, request.error());
  r.id = request->id;
  if (request->data_key && reseal) {
    r.status = "error";
    r.detail = "a data-key rotation is still re-sealing; try again when it has finished";
    return answer(r);
  }
  nlohmann::json receipt = nlohmann::json::object();
  try {
    if (request->pseudonym_epoch) {
      auto previous = v.epochs->current().epoch;
      auto next = v.epochs->rotate(unix_ms_now());
      v.pseudonyms->refresh();
      receipt["pseudonym_epoch"] = next.epoch;
      spdlog::info("keys: pseudonym epoch {} began on command {}", next.epoch, request->id);
      audit(v, "pseudonym_epoch_rotated",
            {{"epoch", next.epoch}, {"previous", previous}, {"reason", "command"},
             {"command", request->id}});
    }
    if (request->data_key) {
      auto id = v.keys->rotate();
      receipt["data_key"] = id;
      reseal = reseal_progress{};
      reseal->new_key = id;
      reseal->command_id = request->id;
      reseal->started = std::chrono::steady_clock::now();
      v.resealing = true;
      spdlog::info("keys: data key {} in force; re-sealing stored values in the background", id);
      audit(v, "data_key_rotated", {{"data_key", id}, {"command", request->id}});
    }
    r.status = request->data_key ? "pending" : "ok";
    if (request->data_key)
      r.detail = "re-sealing stored values; a second result follows when done";
    r.receipt = protocol::dump_safe(receipt);
  } catch (const std::exception& e) {
    spdlog::error("rotate_keys {}: failed: {}", request->id, e.what());
    r.status = "error";
    r.detail = std::string{"storage failure: "} + e.what();
  }
  return answer(r);
}

bool keeper_state::reseal_step() {
  auto& v = *cfg.vault;
  auto& p = *reseal;
  switch (p.table) {
  case 0:
    p.next_key = v.events->reseal(p.next_key, cfg.reseal_batch);
    if (p.next_key == 0)
      ++p.table;
    return true;
  case 1:
    p.next_credential = v.credentials->reseal(p.next_credential, cfg.reseal_batch);
    if (!p.next_credential)
      ++p.table;
    return true;
  case 2:
    p.next_key = v.audit->reseal(p.next_key, cfg.reseal_batch);
    if (p.next_key == 0)
      ++p.table;
    return true;
  case 3:
    v.epochs->reseal();
    ++p.table;
    p.next_key = 0;
    return true;
  case 4:
    p.next_key = v.results->reseal(p.next_key, cfg.reseal_batch);
    if (p.next_key == 0)
      ++p.table;
    return true;
  default:
    break;
  }
  // A value appended while a step ran was sealed with the new key already
  // (the key in force changed before the first step), so none needs an old
  // key now: retire them.
  std::vector<std::uint32_t> retired;
  for (auto id : v.keys->ids())
    if (id != p.new_key) {
      v.keys->retire(id);
      retired.push_back(id);
    }
  auto seconds = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - p.started)
                   .count()
                 / 1000.0;
  spdlog::info("keys: re-sealing done in {:.1f} s; data keys retired: {}", seconds,
               retired.size());
  audit(v, "data_key_resealed", {{"data_key", p.new_key}, {"retired", retired}});
  if (!p.command_id.empty()) {
    protocol::command_result r;
    r.id = p.command_id;
    r.command = "rotate_keys";
    r.status = "ok";
    r.ts = unix_ms_now();
    r.detail = "every stored value is sealed with data key " + std::to_string(p.new_key);
    r.receipt = protocol::dump_safe(nlohmann::json{{"data_key", p.new_key}, {"retired", retired}});
    answer(r);
  }
  v.resealing = false;
  reseal.reset();
  return false;
}

keeper_actor::behavior_type keeper(keeper_actor::stateful_pointer<keeper_state> self,
                                   keeper_config cfg) {
  log_exceptions(self);
  self->state.cfg = std::move(cfg);
  auto& v = *self->state.cfg.vault;
  // A rotation interrupted by a stop resumes: values sealed by older keys remain.
  if (v.keys->ids().size() > 1) {
    self->state.reseal = keeper_state::reseal_progress{};
    self->state.reseal->new_key = v.keys->current();
    self->state.reseal->started = std::chrono::steady_clock::now();
    v.resealing = true;
    spdlog::info("keys: resuming the re-sealing of stored values with data key {}",
                 v.keys->current());
    self->send(self, atom::reseal_v);
  }
  self->send(self, atom::tick_v);
  return {
    [self](atom::command, const std::string& name, const std::string& payload) -> std::string {
      if (name == "erase_subject")
        return self->state.erase_subject(payload);
      bool was = self->state.reseal.has_value();
      auto out = self->state.rotate_keys(payload);
      if (!was && self->state.reseal)
        self->send(self, atom::reseal_v);
      return out;
    },
    [self](atom::tick) {
      self->state.tick();
      self->delayed_send(self, self->state.cfg.tick_interval, atom::tick_v);
    },
    [self](atom::reseal) {
      if (!self->state.reseal)
        return;
      bool more = false;
      try {
        more = self->state.reseal_step();
      } catch (const std::exception& e) {
        spdlog::error("keys: re-sealing failed ({}); retrying in 10 s", e.what());
        self->delayed_send(self, std::chrono::seconds{10}, atom::reseal_v);
        return;
      }
      // Yield between batches: events and decisions go on meanwhile.
      if (more)
        self->send(self, atom::reseal_v);
    },
  };
}

} // namespace lockbridge
