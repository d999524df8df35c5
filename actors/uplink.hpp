#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <nlohmann/json.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/access_service.hpp"
#include "actors/ack_window.hpp"
#include "actors/broker_rotation.hpp"
#include "actors/interfaces.hpp"
#include "actors/lock_presence.hpp"
#include "actors/stall_meter.hpp"
#include "config/config.hpp"
#include "protocols/cloud_messages.hpp"
#include "store/journal.hpp"
#include "store/vault.hpp"
#include "transports/mqtt_link.hpp"

namespace lockbridge {

struct uplink_config {
  std::string site;
  std::string gateway;
  std::string version;
  std::uint64_t locks_configured = 0;
  config::mqtt_config mqtt;
  std::shared_ptr<store::journal> store;
  std::shared_ptr<store::credential_store> credentials; ///< for status (optional)
  std::shared_ptr<access_service> access;               ///< for status (optional)
  std::shared_ptr<store::vault> vault; ///< the audit trail to publish, privacy figures (optional)
  std::chrono::milliseconds audit_interval{2000};
  std::uint32_t retention_days = 90; ///< reported in status
  /// The configured locks and when each was last heard from (Unix ms, 0:
  /// never); empty function: no lock state is published.
  std::function<std::vector<std::pair<std::string, std::int64_t>>()> locks_seen;
  /// The BLE transport's figures (unset without BLE locks).
  std::function<protocol::gateway_status::ble_part()> ble_figures;
  /// The CoAP transport's figures.
  std::function<protocol::gateway_status::coap_part()> coap_figures;
  /// The lock table for the local status (`lockbridge status`, `locks`,
  /// metrics): `{"locks": [{id, transport, last_seen, last_refusal?}],
  /// "strangers": [...]}`; the uplink adds each lock's availability.
  std::function<nlohmann::json()> lock_table;
  /// A lock silent for longer is published as unavailable.
  std::chrono::seconds lock_silence{300};
  /// The peers, spawned before the uplink: the journal it publishes from
  /// and tells what the broker acknowledged, and where commands go.
  journal_actor journal;
  credentials_actor credential_commands; ///< credentials/ commands
  keeper_actor keeper;                   ///< erase_subject and rotate_keys
  commands_actor lock_commands;          ///< cmd/lock
  /// Makes the link to the broker; unset: Paho's (the tests bring their own).
  transport::mqtt_link_factory make_link;
};

caf::error validate(const uplink_config& cfg);


struct uplink_state {
  static inline const char* name = "uplink";

  uplink_config cfg;
  protocol::topics topics{"", ""};
  std::shared_ptr<transport::mqtt_link> link;
  /// The generation whose connection is being left (new TLS files), or 0:
  /// no connect starts meanwhile.
  std::uint64_t leaving = 0;
  bool connected = false;
  bool connecting = false;
  std::uint64_t generation = 0;
  std::uint64_t next_number = 1;
  /// What each source has in flight, and where its reading resumes: the
  /// journal's events (journal keys; mqtt.inflight_window), the audit trail
  /// (audit seqs) and the outbox of command results (outbox numbers). The
  /// capacities are set at start.
  ack_window events_window{1};
  ack_window audit_window{1};
  ack_window results_window{1};
  std::uint64_t removal_sent = 0; ///< the journal was told to remove up to here
  bool removal_scheduled = false;
  std::chrono::milliseconds backoff{0};
  /// Publishes the broker refused (PUBACK reason >= 0x80) or that failed:
  /// publishing pauses for a backoff that doubles like the reconnect's,
  /// instead of resending at once (which spun at a core's worth of CPU).
  std::uint64_t refused_publishes = 0;
  std::int32_t last_refusal_reason = 0;
  std::int64_t last_refusal_at = 0;      ///< Unix ms
  std::int64_t refusal_logged_at = 0;    ///< Unix ms; at most one line a minute
  std::uint64_t refusals_unlogged = 0;
  std::chrono::milliseconds refusal_backoff{0};
  bool publishing_paused = false;
  /// The broker acknowledges nothing (hung: process stopped, TCP open): the
  /// oldest publish waits longer than the bound. Status says so; the link is
  /// dropped and made again.
  bool stalled = false;
  std::uint64_t stalls = 0;
  /// The status message in flight (a probe of the broker while no events
  /// are): its number and when it left; 0 when none is unacknowledged.
  std::uint64_t probe_number = 0;
  std::chrono::steady_clock::time_point probe_sent_at{};
  /// The attempt (generation) whose next step waits for a TLS probe's
  /// verdict, or 0.
  std::uint64_t verdict_awaited = 0;
  bool first_failure = true; ///< explain the next connect failure (TLS probe)
  std::string last_failure;  ///< why the last attempt or link failed (logged with the retry)
  /// Which broker and MQTT version the next connect uses (mqtt.brokers,
  /// mqtt.protocol); made at start.
  std::optional<broker_rotation> rotation;
  bool v5_link = true; ///< the version of the link up now (or last up)
  std::int64_t started_at = 0;
  std::uint64_t events_out = 0;
  std::optional<std::int64_t> cert_expires_at; ///< Unix ms, read from mqtt.cert_file at start
  stall_meter worker_stalls; ///< lateness of the heartbeat (atom::beat)
  std::chrono::steady_clock::time_point beat_due{};
  std::chrono::steady_clock::time_point stall_logged_at{};
  std::string tls_stamp; ///< stat of the TLS files when last read (tls_stamp())
  std::size_t tls_fingerprint = 0; ///< of the CA, certificate and key files in use
  std::size_t bad_tls_fingerprint = 0; ///< of unusable files already reported
  /// Why the TLS files in use cannot work (expired, not yet valid, missing,
  /// unreadable); empty when they can. Logged at start, on change and hourly.
  std::string tls_problem;
  std::int64_t tls_problem_logged_at = 0; ///< Unix ms
  /// MQTT 5 request/response: where (and with what correlation data) the
  /// result of a command id goes. Bounded; the oldest entries go first.
  struct reply_route {
    std::string topic;
    std::string correlation;
  };
  /// A result the outbox's disk refused, with where it goes.
  struct unstored_result {
    std::string payload;
    std::optional<reply_route> route;
  };
  std::deque<unstored_result> pending_results; ///< results not in the outbox (its disk failed)
  std::map<std::string, reply_route> reply_routes;
  /// The route of a result in the outbox, by its number (until its PUBACK).
  std::map<std::uint64_t, reply_route> routes_by_number;
  std::deque<std::string> reply_order;
  /// The locks' availability and own states, as published (retained).
  lock_presence presence;
  /// Retained messages (the status, each lock's state, the clearing of a
  /// removed lock's) waiting to go, one per topic: a newer one replaces the
  /// older. They go behind their own small window, so a burst (a thousand
  /// locks heard from at once) never overruns Paho's buffer; none is dropped.
  std::map<std::string, std::string> retained_waiting; ///< topic -> payload
  /// The waiting topics in the order they first queued (sent in that order,
  /// so a lock whose state changes often cannot starve the others).
  std::deque<std::string> retained_order;
  struct retained_flight {
    std::string topic;
    std::string payload;
  };
  std::map<std::uint64_t, retained_flight> retained_flights; ///< publish number -> message
  // Rates for the health figures: the counters at the last sample.
  std::int64_t rate_at = 0;
  std::uint64_t rate_in_count = 0, rate_out_count = 0;
  double rate_in = 0, rate_out = 0;
};

uplink_actor::behavior_type uplink(uplink_actor::stateful_pointer<uplink_state> self,
                                   uplink_config cfg);

} // namespace lockbridge
