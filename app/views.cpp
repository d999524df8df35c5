#include "views.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "protocols/human.hpp"

namespace lockbridge::views {

namespace {

using nlohmann::json;

std::uint64_t u64(const json& j, const char* key) {
  return j.is_object() ? j.value(key, std::uint64_t{0}) : 0;
}

std::int64_t i64(const json& j, const char* key) {
  return j.is_object() ? j.value(key, std::int64_t{0}) : 0;
}

/// Prints rows under a header, each column as wide as its widest cell.
void table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      width.resize(std::max(width.size(), row.size()));
      width[i] = std::max(width[i], row[i].size());
    }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

} // namespace

void print_locks(const json& doc, std::ostream& out) {
  auto now = i64(doc, "ts");
  const auto& locks = doc.contains("lock_table") ? doc["lock_table"] : json::array();
  if (locks.empty()) {
    out << "no locks are configured\n";
    return;
  }
  std::vector<std::vector<std::string>> rows{
    {"LOCK", "TRANSPORT", "AVAILABLE", "LAST SEEN", "PENDING", "LAST REFUSAL"}};
  bool complete = doc.value("pending_complete", true);
  for (const auto& l : locks) {
    std::string refusal = "-";
    if (l.contains("last_refusal")) {
      const auto& r = l["last_refusal"];
      auto reason = r.value("reason", "");
      refusal = reason + ", " + human::ago(i64(r, "at"), now) + " from " + r.value("peer", "")
                + " (" + std::to_string(u64(r, "count")) + " since start): "
                + std::string{human::refusal_hint(reason)};
    }
    auto seen = i64(l, "last_seen");
    rows.push_back({l.value("id", ""), l.value("transport", ""),
                    l.value("available", false) ? "yes" : (seen == 0 ? "never seen" : "NO"),
                    human::ago(seen, now),
                    l.contains("pending")
                      ? (complete ? "" : ">=") + std::to_string(u64(l, "pending"))
                      : "?",
                    refusal});
  }
  table(out, rows);
  if (!complete)
    out << "(events waiting counted over the oldest part of the journal only)\n";
  if (doc.contains("strangers") && !doc["strangers"].empty()) {
    out << "\nrefused, no lock has this identity (is the lock's id spelled as in [[locks]], "
           "or its ble_address right?):\n";
    for (const auto& s : doc["strangers"])
      out << "  \"" << s.value("identity", "") << "\" from " << s.value("peer", "") << ", "
          << u64(s, "count") << " times, last " << human::ago(i64(s, "at"), now) << "\n";
  }
}

void print_status(const json& doc, std::ostream& out) {
  auto now = i64(doc, "ts");
  out << "lockbridge " << doc.value("version", "") << " on " << doc.value("site", "") << "/"
      << doc.value("gateway", "") << ", up "
      << human::duration((now - doc.value("started_at", now)) / 1000) << "\n";
  const auto& b = doc.contains("broker") ? doc["broker"] : json::object();
  out << "broker:      " << b.value("uri", "") << " "
      << (b.value("connected", false) ? "connected" : "NOT connected")
      << (b.value("stalled", false) ? " (STALLED: publishes unacknowledged)" : "") << "\n";
  if (doc.contains("tls_files")) {
    const auto& t = doc["tls_files"];
    out << "tls:         certificate " << t["cert"].value("file", "") << " expires "
        << human::expiry(i64(t["cert"], "expires_at"), now) << "\n"
        << "             CA " << t["ca"].value("file", "") << " expires "
        << human::expiry(i64(t["ca"], "expires_at"), now) << "\n";
  }
  if (doc.contains("tls_problem"))
    out << "             PROBLEM: " << doc.value("tls_problem", "") << "\n";
  if (doc.contains("storage")) {
    const auto& s = doc["storage"];
    out << "storage:     "
        << (s.value("ok", true) ? std::string{"ok"}
                                : "FAILING since " + human::ago(i64(s, "since"), now) + ": "
                                    + s.value("error", ""))
        << "\n";
  }
  const auto& j = doc.contains("journal") ? doc["journal"] : json::object();
  out << "journal:     " << u64(j, "depth") << " events waiting, " << human::bytes(u64(j, "bytes"))
      << " of " << human::bytes(u64(j, "limit_bytes")) << " ("
      << human::percent(static_cast<double>(u64(j, "bytes")),
                        static_cast<double>(u64(j, "limit_bytes")))
      << ")";
  if (auto oldest = i64(j, "oldest_received_at"); oldest != 0 && u64(j, "depth") > 0)
    out << "; oldest received " << human::ago(oldest, now);
  if (auto refused = u64(j, "refused_full"))
    out << "; refused " << refused << " batches when full";
  out << "\n";
  const auto& e = doc.contains("events") ? doc["events"] : json::object();
  out << "events:      " << u64(e, "in") << " in, " << u64(e, "out") << " out since start\n";
  if (doc.contains("credentials")) {
    const auto& c = doc["credentials"];
    out << "credentials: " << u64(c, "count") << " at version " << u64(c, "version")
        << (c.value("stale", true) ? " (STALE: doors follow their offline policy)" : "")
        << "; " << u64(c, "decisions") << " decisions since start\n";
  }
  if (doc.contains("privacy")) {
    const auto& p = doc["privacy"];
    out << "keys:        pseudonym epoch " << u64(p, "pseudonym_epoch") << " ("
        << u64(p, "pseudonym_epochs_live") << " epoch keys held), data key " << u64(p, "data_key")
        << (p.value("resealing", false) ? " (RE-SEALING)" : "") << "\n";
    out << "audit:       " << u64(p, "audit_pending") << " records waiting for the broker; next seq "
        << u64(p, "audit_next_seq") << "\n";
    out << "quarantine:  " << u64(p, "quarantined") << " values"
        << (u64(p, "quarantined") > 0 ? " (FAILED AUTHENTICATION: see the log)" : "") << "\n";
    const auto& purged = p.contains("purged") ? p["purged"] : json::object();
    out << "retention:   " << u64(p, "retention_days") << " days; purged since start: "
        << u64(purged, "journal") << " events, " << u64(purged, "audit") << " audit records, "
        << u64(purged, "quarantine") << " quarantined values\n";
  }
  if (doc.contains("lock_table")) {
    out << "\n";
    print_locks(doc, out);
  }
}

} // namespace lockbridge::views
