#include "protocols/openmetrics.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <string_view>
#include <vector>

namespace lockbridge::protocol {

namespace {

using nlohmann::json;

std::string number(double v) {
  if (std::isnan(v))
    return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    return std::to_string(static_cast<long long>(v));
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

double num(const json& j, std::string_view key) {
  if (!j.is_object())
    return 0;
  auto it = j.find(key);
  if (it == j.end())
    return 0;
  if (it->is_boolean())
    return it->get<bool>() ? 1 : 0;
  return it->is_number() ? it->get<double>() : 0;
}

const json& part(const json& doc, std::string_view key) {
  static const json empty = json::object();
  auto it = doc.find(key);
  return it != doc.end() && it->is_object() ? *it : empty;
}

/// One family: its samples, written under one HELP and TYPE.
class writer {
public:
  explicit writer(bool openmetrics) : openmetrics_(openmetrics) {}

  struct sample {
    std::string labels; // `{a="b"}` or empty
    double value;
  };

  void family(std::string_view name, std::string_view type, std::string_view help,
              const std::vector<sample>& samples) {
    bool counter = type == "counter";
    std::string family{name};
    std::string sample_name = family + (counter ? "_total" : "");
    // 0.0.4 names the sample itself in TYPE; OpenMetrics the family.
    const auto& typed = openmetrics_ ? family : sample_name;
    out_ += "# HELP " + typed + " " + std::string{help} + "\n";
    out_ += "# TYPE " + typed + " " + std::string{type} + "\n";
    for (const auto& s : samples)
      out_ += sample_name + s.labels + " " + number(s.value) + "\n";
  }

  void one(std::string_view name, std::string_view type, std::string_view help, double value) {
    family(name, type, help, {{"", value}});
  }

  std::string finish() {
    if (openmetrics_)
      out_ += "# EOF\n";
    return std::move(out_);
  }

private:
  bool openmetrics_;
  std::string out_;
};

std::string label(std::string_view name, std::string_view value) {
  return std::string{name} + "=\"" + escape_label(value) + "\"";
}

std::string labels(std::initializer_list<std::pair<std::string_view, std::string_view>> list) {
  std::string out = "{";
  for (const auto& [k, v] : list)
    out += (out.size() > 1 ? "," : "") + label(k, v);
  return out + "}";
}

} // namespace

std::string escape_label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string render_metrics(const json& doc, bool openmetrics) {
  writer w{openmetrics};
  auto now_ms = num(doc, "ts");
  w.family("lockbridge_info", "gauge", "The gateway's identity and version (always 1).",
           {{labels({{"site", doc.value("site", "")},
                     {"gateway", doc.value("gateway", "")},
                     {"version", doc.value("version", "")}}),
             1}});
  w.one("lockbridge_uptime_seconds", "gauge", "Seconds since the daemon started.",
        (now_ms - num(doc, "started_at")) / 1000);

  const auto& j = part(doc, "journal");
  w.one("lockbridge_journal_events", "gauge", "Events waiting in the journal for the broker.",
        num(j, "depth"));
  w.one("lockbridge_journal_bytes", "gauge", "Bytes the waiting events take.", num(j, "bytes"));
  w.one("lockbridge_journal_limit_bytes", "gauge",
        "The journal's bound (store.journal_max_mb); beyond it new events are refused.",
        num(j, "limit_bytes"));
  auto oldest = num(j, "oldest_received_at");
  w.one("lockbridge_journal_oldest_pending_age_seconds", "gauge",
        "Age of the oldest event waiting; 0 when none waits.",
        oldest > 0 && num(j, "depth") > 0 ? (now_ms - oldest) / 1000 : 0);
  w.one("lockbridge_journal_refused_full", "counter",
        "Event batches refused because the journal was full, since start.",
        num(j, "refused_full"));
  w.one("lockbridge_worker_stall_seconds", "gauge",
        "The longest time in the last minute that the actors' one worker thread was held.",
        num(part(doc, "health"), "worker_stall_ms") / 1000);
  const auto& e = part(doc, "events");
  w.one("lockbridge_events_received", "counter", "Events stored from locks since start.",
        num(e, "in"));
  w.one("lockbridge_events_delivered", "counter",
        "Events the broker acknowledged since start.", num(e, "out"));

  // Refusals by transport and reason, from the transports' own counters.
  std::vector<writer::sample> refusals;
  const auto& c = part(doc, "coap");
  if (doc.contains("coap")) {
    auto wrong = num(c, "wrong_key_handshakes");
    refusals.push_back({labels({{"transport", "coap"}, {"reason", "wrong_key"}}), wrong});
    refusals.push_back({labels({{"transport", "coap"}, {"reason", "unknown_identity"}}),
                        std::max(0.0, num(c, "handshake_refusals") - wrong)});
    refusals.push_back({labels({{"transport", "coap"}, {"reason", "max_sessions"}}),
                        num(c, "session_refusals")});
    refusals.push_back({labels({{"transport", "coap"}, {"reason", "bad_message"}}),
                        num(c, "bad_requests")});
  }
  const auto& b = part(doc, "ble");
  if (doc.contains("ble")) {
    refusals.push_back({labels({{"transport", "ble"}, {"reason", "forged"}}),
                        num(b, "refused_forged")});
    refusals.push_back({labels({{"transport", "ble"}, {"reason", "replayed"}}),
                        num(b, "refused_replayed")});
    refusals.push_back({labels({{"transport", "ble"}, {"reason", "unknown_identity"}}),
                        num(b, "refused_unconfigured")});
    refusals.push_back({labels({{"transport", "ble"}, {"reason", "bad_message"}}),
                        num(b, "bad_messages")});
  }
  if (!refusals.empty())
    w.family("lockbridge_lock_refusals", "counter",
             "Handshakes and messages from locks turned away since start, by reason.", refusals);

  const auto& cr = part(doc, "credentials");
  if (cr.contains("decisions_by_reason")) {
    std::vector<writer::sample> decisions;
    for (const auto& [reason, count] : cr["decisions_by_reason"].items())
      decisions.push_back(
        {labels({{"reason", reason}}), count.is_number() ? count.get<double>() : 0});
    w.family("lockbridge_access_decisions", "counter",
             "Access decisions since start, by reason (allowed, or why not).", decisions);
  }
  if (doc.contains("credentials")) {
    w.one("lockbridge_credentials", "gauge", "Credentials in force.", num(cr, "count"));
    w.one("lockbridge_credentials_stale", "gauge",
          "1 while the credential set is older than credentials.max_age_hours.",
          num(cr, "stale"));
  }
  if (doc.contains("coap")) {
    w.one("lockbridge_dtls_sessions", "gauge", "Locks with a DTLS session now.",
          num(c, "sessions"));
    w.one("lockbridge_dtls_sessions_max", "gauge", "coap.max_sessions.", num(c, "max_sessions"));
  }
  if (doc.contains("ble"))
    w.one("lockbridge_ble_links", "gauge", "BLE locks connected now.", num(b, "connected_now"));

  const auto& br = part(doc, "broker");
  w.one("lockbridge_uplink_connected", "gauge", "1 while the broker connection is up.",
        num(br, "connected"));
  w.one("lockbridge_uplink_stalled", "gauge",
        "1 while publishes go unacknowledged on an open connection.", num(br, "stalled"));
  if (br.contains("failovers"))
    w.one("lockbridge_uplink_failovers", "counter",
          "Moves to another broker of mqtt.brokers since start.", num(br, "failovers"));
  if (br.contains("uri"))
    w.family("lockbridge_uplink_info", "gauge",
             "The broker in use (or tried next) and the MQTT version of the last link (always 1).",
             {{labels({{"broker", br.value("uri", "")}, {"protocol", br.value("protocol", "")}}),
               1}});

  if (doc.contains("tls_files")) {
    std::vector<writer::sample> days;
    for (const auto* which : {"cert", "ca"}) {
      const auto& f = part(doc["tls_files"], which);
      auto end = num(f, "expires_at");
      if (end > 0)
        days.push_back({labels({{"file", which}}), std::floor((end - now_ms) / 86'400'000.0)});
    }
    if (!days.empty())
      w.family("lockbridge_certificate_days_left", "gauge",
               "Whole days until the MQTT client certificate (file=\"cert\") or the CA "
               "(file=\"ca\") expires; negative once expired.",
               days);
  }
  if (doc.contains("storage")) {
    const auto& s = part(doc, "storage");
    w.one("lockbridge_storage_ok", "gauge", "1 while the disk takes writes.", num(s, "ok"));
    w.one("lockbridge_storage_faults", "counter", "Failed commits since start.",
          num(s, "faults"));
  }

  if (doc.contains("lock_table") && doc["lock_table"].is_array()) {
    std::vector<writer::sample> available, seen;
    for (const auto& row : doc["lock_table"]) {
      auto l = labels({{"lock", row.value("id", "")}, {"transport", row.value("transport", "")}});
      available.push_back({l, row.value("available", false) ? 1.0 : 0.0});
      seen.push_back({l, num(row, "last_seen") / 1000});
    }
    w.one("lockbridge_locks_configured", "gauge", "Locks in the configuration.",
          static_cast<double>(doc["lock_table"].size()));
    w.family("lockbridge_lock_available", "gauge",
             "1 if the lock was heard from within coap.lock_silence_s.", available);
    w.family("lockbridge_lock_last_seen_timestamp_seconds", "gauge",
             "When the lock last said something authentic (Unix time); 0: never since start.",
             seen);
  }
  return w.finish();
}

} // namespace lockbridge::protocol
