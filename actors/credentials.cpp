#include "actors/credentials.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/failure.hpp"

#include "actors/error.hpp"
#include "protocols/clock_guard.hpp"

namespace lockbridge {

namespace {

using protocol::unix_ms_now;

constexpr const char* snapshot_command = "credentials/snapshot";
constexpr const char* delta_command = "credentials/delta";

} // namespace

caf::error validate(const credentials_config& cfg) {
  if (!cfg.store || !cfg.publish_result)
    return caf::make_error(ec::config_invalid, "credentials needs a store and a result sink");
  return caf::none;
}

void credentials_state::reply(protocol::command_result r) {
  r.ts = unix_ms_now();
  cfg.publish_result(keep_reply(cfg.vault.get(), "credentials", cfg.site, cfg.gateway, r));
}

void credentials_state::save_clock() {
  if (!cfg.access)
    return;
  try {
    cfg.store->save_time_high_water(cfg.access->now());
  } catch (const std::exception& e) {
    spdlog::warn("credentials: cannot save the clock's high-water mark: {}", e.what());
  }
}

std::optional<input_error> credentials_state::stage(protocol::snapshot_chunk& chunk) {
  auto& s = *staged;
  // Check the whole chunk before keeping any of it.
  std::vector<store::credential_store::lookup_key> keys;
  keys.reserve(chunk.credentials.size());
  std::set<store::credential_store::lookup_key> in_chunk;
  for (std::size_t i = 0; i < chunk.credentials.size(); ++i) {
    auto key = cfg.store->key_of(chunk.credentials[i].cred);
    if (s.keys.contains(key) || !in_chunk.insert(key).second)
      return input_error{"credentials[" + std::to_string(i) + "].cred",
                         "this credential appears twice in the snapshot"};
    keys.push_back(key);
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    s.keys.insert(keys[i]);
    s.entries.emplace_back(keys[i], std::move(chunk.credentials[i].value));
  }
  s.received.insert(chunk.chunk);
  return std::nullopt;
}

std::optional<input_error> credentials_state::apply_staged(protocol::command_result& r) {
  auto& s = *staged;
  auto count = s.entries.size();
  auto started = std::chrono::steady_clock::now();
  spdlog::info("credentials: applying snapshot {} ({} credentials, version {}) in one "
               "transaction",
               s.id, count, s.version);
  try {
    cfg.store->replace_all(std::move(s.entries), s.version, unix_ms_now());
  } catch (const std::exception& e) {
    spdlog::error("credentials: applying snapshot {} failed: {}; the old set stays", s.id,
                  e.what());
    return input_error{"", std::string{"applying the snapshot failed: "} + e.what()};
  }
  auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  spdlog::info("credentials: snapshot {} applied: {} credentials, version {} now in force "
               "({:.2f} s)",
               s.id, count, s.version, took);
  if (cfg.vault)
    audit(*cfg.vault, "credentials_snapshot",
          {{"command", r.id}, {"snapshot", s.id}, {"version", s.version}, {"count", count}});
  r.status = "ok";
  r.version = s.version;
  r.detail = "snapshot applied: " + std::to_string(count) + " credentials";
  return std::nullopt;
}

credentials_state::admission credentials_state::admit(const protocol::snapshot_chunk& chunk,
                                                      std::uint64_t in_force) {
  if (staged && staged->id != chunk.snapshot) {
    if (chunk.chunk != 1)
      return {input_error{"snapshot", "chunk " + std::to_string(chunk.chunk) + " of snapshot \""
                                        + chunk.snapshot + "\" while snapshot \"" + staged->id
                                        + "\" is being received; start a new snapshot with "
                                          "chunk 1"},
              false};
    spdlog::warn("credentials: snapshot {} replaced by snapshot {} before it was complete",
                 staged->id, chunk.snapshot);
    staged.reset();
  }
  if (staged)
    return {};
  if (chunk.version < in_force)
    return {input_error{"version", "snapshot version " + std::to_string(chunk.version)
                                     + " is older than the version in force ("
                                     + std::to_string(in_force) + ")"},
            false};
  if (chunk.version == in_force && in_force != 0)
    return {std::nullopt, true};
  staged.emplace();
  staged->id = chunk.snapshot;
  staged->version = chunk.version;
  staged->chunks = chunk.chunks;
  spdlog::info("credentials: receiving snapshot {} (version {}, {} chunks)", staged->id,
               staged->version, staged->chunks);
  return {};
}

void credentials_state::on_snapshot_chunk(const std::string& payload) {
  protocol::command_result r;
  r.command = snapshot_command;
  auto in_force = cfg.store->figures().version;
  auto refuse = [&](input_error e, bool abandon) {
    r.status = "error";
    r.version = in_force;
    if (abandon && staged) {
      r.detail = "snapshot " + staged->id + " abandoned; nothing changed; send it again from "
                 "chunk 1";
      staged.reset();
    } else {
      r.detail = "nothing changed";
    }
    spdlog::warn("credentials: snapshot chunk refused: {}", e.to_string());
    r.error = std::move(e);
    reply(std::move(r));
  };
  auto chunk = protocol::decode_snapshot_chunk(payload); // parsed once
  r.id = chunk ? chunk->id : protocol::command_id_of(payload).value_or("");
  if (!chunk) {
    // A bad chunk of the snapshot being received ends it: never a mixture.
    refuse(chunk.error(), true);
    return;
  }
  auto admitted = admit(*chunk, in_force);
  if (admitted.error) {
    refuse(std::move(*admitted.error), false);
    return;
  }
  if (admitted.already_in_force) {
    r.status = "ok";
    r.version = in_force;
    r.detail = "version already in force; nothing to do";
    reply(std::move(r));
    return;
  }
  auto& s = *staged;
  if (chunk->version != s.version || chunk->chunks != s.chunks) {
    refuse({chunk->version != s.version ? "version" : "chunks",
            "differs from chunk 1 of snapshot \"" + s.id + "\""},
           true);
    return;
  }
  if (s.received.contains(chunk->chunk)) {
    r.status = "pending";
    r.version = in_force;
    r.detail = "chunk " + std::to_string(chunk->chunk) + " already received";
    reply(std::move(r));
    return;
  }
  if (s.entries.size() + chunk->credentials.size() > cfg.max_snapshot_credentials) {
    refuse({"credentials", "snapshot exceeds " + std::to_string(cfg.max_snapshot_credentials)
                             + " credentials"},
           true);
    return;
  }
  if (auto error = stage(*chunk)) {
    refuse(std::move(*error), true);
    return;
  }
  s.last_chunk = std::chrono::steady_clock::now();
  if (s.received.size() < s.chunks) {
    r.status = "pending";
    r.version = in_force;
    r.detail = "chunk " + std::to_string(chunk->chunk) + " of " + std::to_string(s.chunks)
               + " kept (" + std::to_string(s.received.size()) + " received)";
    reply(std::move(r));
    return;
  }
  if (auto error = apply_staged(r)) {
    refuse(std::move(*error), true);
    return;
  }
  staged.reset();
  save_clock();
  if (cfg.access)
    cfg.access->synced(cfg.store->figures().synced_at);
  reply(std::move(r));
}

void credentials_state::on_delta(const std::string& payload) {
  protocol::command_result r;
  r.command = delta_command;
  auto in_force = cfg.store->figures().version;
  auto delta = protocol::decode_credential_delta(payload); // parsed once
  r.id = delta ? delta->id : protocol::command_id_of(payload).value_or("");
  if (!delta) {
    spdlog::warn("credentials: delta refused: {}", delta.error().to_string());
    r.status = "error";
    r.version = in_force;
    r.error = delta.error();
    r.detail = "nothing changed";
    reply(std::move(r));
    return;
  }
  std::optional<store::credential_store::delta_counts> counts;
  try {
    counts = cfg.store->apply(*delta, unix_ms_now());
  } catch (const std::exception& e) {
    spdlog::error("credentials: applying delta {} failed: {}", delta->id, e.what());
    r.status = "error";
    r.version = in_force;
    r.error = input_error{"", std::string{"applying the delta failed: "} + e.what()};
    reply(std::move(r));
    return;
  }
  if (!counts) {
    spdlog::warn("credentials: delta {} is based on version {} but version {} is in force; "
                 "asking for a snapshot",
                 delta->id, delta->base_version, in_force);
    r.status = "error";
    r.version = in_force;
    r.error = input_error{"base_version", "expected " + std::to_string(in_force)
                                            + " (the version in force), got "
                                            + std::to_string(delta->base_version)};
    r.detail = "nothing changed; send a snapshot";
    r.snapshot_requested = true;
    reply(std::move(r));
    return;
  }
  spdlog::info("credentials: delta {} applied: version {} now in force ({} revoked, {} deleted, "
               "{} upserted, {} not found)",
               delta->id, delta->version, counts->revoked, counts->deleted, counts->upserted,
               counts->not_found);
  save_clock();
  if (cfg.access)
    cfg.access->synced(cfg.store->figures().synced_at);
  if (cfg.vault)
    audit(*cfg.vault, "credentials_delta",
          {{"command", delta->id}, {"base_version", delta->base_version},
           {"version", delta->version}, {"revoked", counts->revoked},
           {"deleted", counts->deleted}, {"upserted", counts->upserted},
           {"not_found", counts->not_found}});
  r.status = "ok";
  r.version = delta->version;
  r.detail = std::to_string(counts->revoked) + " revoked, " + std::to_string(counts->deleted)
             + " deleted, " + std::to_string(counts->upserted) + " upserted, "
             + std::to_string(counts->not_found) + " not found";
  reply(std::move(r));
}

credentials_actor::behavior_type
credentials(credentials_actor::stateful_pointer<credentials_state> self, credentials_config cfg) {
  log_exceptions(self);
  self->state.cfg = std::move(cfg);
  self->delayed_send(self, self->state.cfg.tick_interval, atom::tick_v);
  // On the way out, save the clock once more. The functor holds what it needs
  // (the store keeps the LMDB environment alive), not the actor's state.
  self->attach_functor([store = self->state.cfg.store, access = self->state.cfg.access] {
    if (!access)
      return;
    try {
      store->save_time_high_water(access->now());
    } catch (const std::exception& e) {
      spdlog::warn("credentials: cannot save the clock's high-water mark: {}", e.what());
    }
  });
  return {
    [self](atom::command, const std::string& name, const std::string& payload) {
      auto& st = self->state;
      if (name == snapshot_command) {
        st.on_snapshot_chunk(payload);
      } else if (name == delta_command) {
        st.on_delta(payload);
      } else {
        protocol::command_result r;
        r.id = protocol::command_id_of(payload).value_or("");
        r.command = name;
        r.status = "error";
        r.error = input_error{"", "unknown command; expected credentials/snapshot or "
                                  "credentials/delta"};
        st.reply(std::move(r));
      }
    },
    [self](atom::tick) {
      auto& st = self->state;
      st.save_clock();
      if (st.staged
          && std::chrono::steady_clock::now() - st.staged->last_chunk > st.cfg.snapshot_timeout) {
        spdlog::warn("credentials: snapshot {} abandoned after {} s without a chunk ({} of {} "
                     "received); the old set stays",
                     st.staged->id, st.cfg.snapshot_timeout.count(), st.staged->received.size(),
                     st.staged->chunks);
        st.staged.reset();
      }
      self->delayed_send(self, st.cfg.tick_interval, atom::tick_v);
    },
  };
}

} // namespace lockbridge
