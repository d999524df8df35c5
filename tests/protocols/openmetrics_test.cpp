#include "protocols/openmetrics.hpp"

#include <doctest/doctest.h>

#include <sstream>

using namespace lockbridge::protocol;

namespace {

nlohmann::json status_doc() {
  return nlohmann::json::parse(R"({
    "site": "site-1", "gateway": "gw-1", "version": "0.1.0",
    "started_at": 1000000, "ts": 1060000,
    "journal": {"depth": 20, "bytes": 2800, "limit_bytes": 536870912,
                "oldest_received_at": 1050000, "refused_full": 2},
    "events": {"in": 25, "out": 5},
    "coap": {"sessions": 1, "max_sessions": 1000, "handshake_refusals": 3,
             "wrong_key_handshakes": 1, "session_refusals": 0, "bad_requests": 4},
    "credentials": {"count": 7, "stale": true,
                    "decisions_by_reason": {"allowed": 3, "revoked": 1}},
    "broker": {"connected": false, "stalled": false, "uri": "ssl://b:8883", "protocol": "3.1.1",
               "failovers": 2},
    "storage": {"ok": true, "faults": 0},
    "health": {"worker_stall_ms": 250},
    "tls_files": {"cert": {"file": "c.pem", "expires_at": 87460000},
                  "ca": {"file": "ca.pem", "expires_at": 0}},
    "lock_table": [{"id": "lock-01", "transport": "coap", "available": true, "last_seen": 1059000},
                   {"id": "lo\"ck\\2", "transport": "coap", "available": false, "last_seen": 0}]
  })");
}

bool has_line(const std::string& text, const std::string& line) {
  std::istringstream in{text};
  for (std::string l; std::getline(in, l);)
    if (l == line)
      return true;
  return false;
}

} // namespace

TEST_SUITE("protocols") {

TEST_CASE("openmetrics: the status figures as families, counters with _total, ending # EOF") {
  auto text = render_metrics(status_doc(), true);
  CHECK(text.ends_with("\n# EOF\n"));
  CHECK(has_line(text, "# TYPE lockbridge_events_received counter"));
  CHECK(has_line(text, "lockbridge_events_received_total 25"));
  CHECK(has_line(text, "lockbridge_journal_events 20"));
  CHECK(has_line(text, "lockbridge_journal_oldest_pending_age_seconds 10"));
  CHECK(has_line(text, "lockbridge_uptime_seconds 60"));
  CHECK(has_line(text, "lockbridge_worker_stall_seconds 0.25"));
  CHECK(has_line(text, R"(lockbridge_lock_refusals_total{transport="coap",reason="wrong_key"} 1)"));
  CHECK(has_line(text,
                 R"(lockbridge_lock_refusals_total{transport="coap",reason="unknown_identity"} 2)"));
  CHECK(has_line(text, R"(lockbridge_access_decisions_total{reason="revoked"} 1)"));
  CHECK(has_line(text, "lockbridge_uplink_connected 0"));
  CHECK(has_line(text, "lockbridge_uplink_failovers_total 2"));
  CHECK(has_line(text, R"(lockbridge_uplink_info{broker="ssl://b:8883",protocol="3.1.1"} 1)"));
  CHECK(has_line(text, "lockbridge_credentials_stale 1"));
  CHECK(has_line(text, R"(lockbridge_certificate_days_left{file="cert"} 1)"));
  CHECK(text.find(R"(days_left{file="ca"})") == std::string::npos); // no date known: no sample
  CHECK(has_line(text, R"(lockbridge_lock_available{lock="lock-01",transport="coap"} 1)"));
  CHECK(has_line(text, "lockbridge_locks_configured 2"));
  // No BLE locks: no BLE families.
  CHECK(text.find("lockbridge_ble_links") == std::string::npos);
}

TEST_CASE("openmetrics: label values are escaped, never break a line") {
  auto text = render_metrics(status_doc(), true);
  CHECK(has_line(text, R"(lockbridge_lock_available{lock="lo\"ck\\2",transport="coap"} 0)"));
  CHECK(escape_label("a\nb") == "a\\nb");
}

TEST_CASE("openmetrics: Prometheus' 0.0.4 format names the sample in TYPE and has no # EOF") {
  auto text = render_metrics(status_doc(), false);
  CHECK(has_line(text, "# TYPE lockbridge_events_received_total counter"));
  CHECK(text.find("# EOF") == std::string::npos);
}

TEST_CASE("openmetrics: a document missing parts still renders what it has") {
  auto text = render_metrics(nlohmann::json::object(), true);
  CHECK(has_line(text, "lockbridge_journal_events 0"));
  CHECK(text.ends_with("# EOF\n"));
}

}
