// The uplink's status: the figures of the retained status message and of
// `lockbridge status` on the box, gathered from the uplink's state and its
// configuration's sources (transports, credentials, vault). Plain functions
// of the state; the uplink adds the journal's figures from its actor.

#include "actors/uplink_status.hpp"

#include <spdlog/spdlog.h>

#include "config/tls_check.hpp"
#include "protocols/clock_guard.hpp"
#include "store/quarantine.hpp"

namespace lockbridge {

using protocol::unix_ms_now;

/// What only the box's own status shows (not the MQTT status, which every
/// subscriber receives each interval): the lock table, the strangers, the
/// decisions by reason and the TLS files' ends.
void add_local_detail(const uplink_state& st, nlohmann::json& doc) {
  if (st.cfg.lock_table) {
    auto table = st.cfg.lock_table();
    auto now = unix_ms_now();
    auto silence_ms
      = std::chrono::duration_cast<std::chrono::milliseconds>(st.cfg.lock_silence).count();
    for (auto& row : table["locks"]) {
      auto seen = row.value("last_seen", std::int64_t{0});
      row["available"] = seen != 0 && now - seen <= silence_ms;
    }
    doc["lock_table"] = std::move(table["locks"]);
    doc["strangers"] = std::move(table["strangers"]);
    doc["lock_silence_s"] = st.cfg.lock_silence.count();
  }
  if (st.cfg.access && doc.contains("credentials")) {
    auto by_reason = nlohmann::json::object();
    for (std::size_t i = 0; i < st.cfg.access->decisions.size(); ++i) {
      auto name = protocol::to_string(static_cast<protocol::access_reason>(i));
      by_reason[std::string{name}] = st.cfg.access->decisions[i].load();
    }
    doc["credentials"]["decisions_by_reason"] = std::move(by_reason);
  }
  auto file_end = [](const std::filesystem::path& file) -> nlohmann::json {
    auto end = config::certificate_not_after(file);
    return {{"file", file.string()}, {"expires_at", end ? *end * 1000 : 0}};
  };
  doc["tls_files"] = {{"cert", file_end(st.cfg.mqtt.cert_file)},
                      {"ca", file_end(st.cfg.mqtt.ca_file)}};
}

/// The status without the journal's figures (they come from its actor).
protocol::gateway_status status_now(const uplink_state& st) {
  protocol::gateway_status s;
  s.site = st.cfg.site;
  s.gateway = st.cfg.gateway;
  s.version = st.cfg.version;
  s.started_at = st.started_at;
  s.now = unix_ms_now();
  s.locks_configured = st.cfg.locks_configured;
  s.events_out = st.events_out;
  s.client_cert_expires_at = st.cert_expires_at;
  if (!st.tls_problem.empty())
    s.tls_problem = st.tls_problem;
  if (st.refused_publishes > 0)
    s.broker_refusals = protocol::gateway_status::refusals_part{
      st.refused_publishes, st.last_refusal_reason, st.last_refusal_at};
  s.cert_warning_days = st.cfg.mqtt.cert_warning_days;
  if (st.cfg.ble_figures)
    s.ble = st.cfg.ble_figures();
  if (st.cfg.coap_figures)
    s.coap = st.cfg.coap_figures();
  if (st.cfg.credentials) {
    auto f = st.cfg.credentials->figures();
    protocol::gateway_status::credentials_part c;
    c.count = f.count;
    c.version = f.version;
    c.synced_at = f.synced_at;
    if (st.cfg.access) {
      auto& a = *st.cfg.access;
      c.stale = a.stale(a.now());
      for (const auto& d : a.decisions)
        c.decisions += d.load();
      c.denied_stale = a.decisions[static_cast<std::size_t>(protocol::access_reason::stale_store)];
      c.clock_behind_ms = a.clock_behind_ms;
    }
    s.credentials = c;
  }
  if (st.cfg.vault) {
    auto& v = *st.cfg.vault;
    auto g = v.storage.get();
    s.storage = protocol::gateway_status::storage_part{g.ok, g.error, g.since, g.faults};
    protocol::gateway_status::privacy_part p;
    try {
      auto epochs = v.epochs->all();
      p.pseudonym_epoch = epochs.back().epoch;
      p.pseudonym_epoch_since = epochs.back().created_at;
      p.pseudonym_epochs_live = epochs.size();
      p.data_key = v.keys->current();
      p.data_keys_live = v.keys->ids().size();
      p.resealing = v.resealing;
      p.quarantined = store::quarantine_stats(*v.env).count;
      p.quarantined_since_start = v.quarantined;
      auto a = v.audit->figures();
      p.audit_pending = a.count;
      p.audit_next_seq = a.next_seq;
      p.audit_purged = v.audit_purged;
      p.quarantine_purged = v.quarantine_purged;
      p.epochs_destroyed = v.epochs_destroyed;
      p.erasures = v.erasures;
      p.retention_days = st.cfg.retention_days;
      s.privacy = p;
    } catch (const std::exception& e) {
      spdlog::warn("uplink: privacy figures unavailable: {}", e.what());
    }
  }
  return s;
}

/// Fills the health figures; samples the rates at most once a second.
void add_health(uplink_state& st, protocol::gateway_status& s, const journal_figures& f,
                std::chrono::steady_clock::time_point now_steady) {
  auto now = unix_ms_now();
  if (st.rate_at == 0) {
    st.rate_at = now;
    st.rate_in_count = f.stored;
    st.rate_out_count = st.events_out;
  } else if (now - st.rate_at >= 1000) {
    auto seconds = static_cast<double>(now - st.rate_at) / 1000.0;
    st.rate_in = static_cast<double>(f.stored - st.rate_in_count) / seconds;
    st.rate_out = static_cast<double>(st.events_out - st.rate_out_count) / seconds;
    st.rate_at = now;
    st.rate_in_count = f.stored;
    st.rate_out_count = st.events_out;
  }
  protocol::gateway_status::health_part h;
  h.uptime_s = (now - st.started_at) / 1000;
  h.locks_available = st.presence.available_count();
  h.events_in_per_s = st.rate_in;
  h.events_out_per_s = st.rate_out;
  h.oldest_pending_age_s = f.oldest_received_at == 0 ? 0 : (now - f.oldest_received_at) / 1000;
  h.worker_stall_ms = st.worker_stalls.longest(now_steady).count();
  s.health = h;
}

} // namespace lockbridge
