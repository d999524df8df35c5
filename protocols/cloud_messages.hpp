#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/result.hpp"

namespace lockbridge::protocol {

/// Schema identifiers carried by every cloud payload (docs/mqtt-api.md).
inline constexpr std::string_view events_schema = "lockbridge/events/1";
inline constexpr std::string_view status_schema = "lockbridge/status/1";

/// True if `id` may be a site, gateway or lock id: 1 to 64 of [A-Za-z0-9_-].
/// Such ids are safe inside MQTT topics (no '/', '+', '#') and event ids.
bool is_valid_id(std::string_view id);

/// The MQTT topics of one gateway: `lockbridge/v1/{site}/{gateway}/...`.
class topics {
public:
  topics(std::string site, std::string gateway);

  [[nodiscard]] std::string status() const { return prefix_ + "status"; }
  [[nodiscard]] std::string events() const { return prefix_ + "events"; }
  [[nodiscard]] std::string audit() const { return prefix_ + "audit"; }
  [[nodiscard]] std::string cmd_result() const { return prefix_ + "cmd_result"; }
  [[nodiscard]] std::string lock_state(std::string_view lock) const;
  [[nodiscard]] std::string command(std::string_view name) const;
  [[nodiscard]] const std::string& prefix() const noexcept { return prefix_; }

private:
  std::string prefix_;
};

/// An event as the journal keeps it: pseudonymised, stamped on arrival.
struct journal_record {
  std::string lock;
  std::uint64_t seq = 0;
  std::int64_t ts = 0;               ///< lock's clock, Unix ms
  std::string type;
  std::string door;
  std::optional<std::string> cred;   ///< a pseudonym, never a raw identifier
  std::optional<std::string> detail;
  std::int64_t received_at = 0;      ///< gateway's clock, Unix ms

  friend bool operator==(const journal_record&, const journal_record&) = default;
};

/// Journal value encoding (compact CBOR). Bytes, not JSON: what is on disk.
std::vector<std::uint8_t> encode_record(const journal_record& record);
result<journal_record> decode_record(std::span<const std::uint8_t> bytes);

/// The stable id of an event: `{gateway}/{lock}/{seq}`. A duplicate delivery
/// carries the same id, so the cloud can drop it.
std::string event_id(std::string_view gateway, std::string_view lock, std::uint64_t seq);

/// The JSON of one `events` message carrying `records` in journal order.
std::string encode_events(std::string_view site, std::string_view gateway,
                          std::span<const journal_record> records);

/// Figures about the journal reported in the status message.
struct journal_figures {
  std::uint64_t depth = 0;             ///< events waiting for the broker
  std::uint64_t bytes = 0;             ///< bytes they take
  std::uint64_t limit_bytes = 0;       ///< the configured bound
  std::int64_t oldest_received_at = 0; ///< 0 if empty
  std::uint64_t refused_full = 0;      ///< batches refused because full (since start)
  std::uint64_t purged_retention = 0;  ///< events purged by retention (since start)
  std::uint64_t duplicates = 0;        ///< repeated events acknowledged, not stored (since start)
  std::uint64_t stored = 0;            ///< events stored (since start)
  std::uint64_t commits = 0;           ///< group commits of appended batches (since start)
};

/// The gateway status: the retained birth message and its periodic refresh.
struct gateway_status {
  std::string site;
  std::string gateway;
  std::string version;
  bool online = true;
  std::int64_t started_at = 0; ///< Unix ms
  std::int64_t now = 0;        ///< Unix ms
  std::uint64_t locks_configured = 0;
  std::uint64_t events_out = 0;  ///< events acknowledged by the broker since start
  journal_figures journal;
  /// The credential set and access decisions (absent in a will).
  struct credentials_part {
    std::uint64_t count = 0;
    std::uint64_t version = 0;
    std::int64_t synced_at = 0;     ///< 0: never
    bool stale = true;              ///< older than credentials.max_age_hours
    std::uint64_t decisions = 0;    ///< since start
    std::uint64_t denied_stale = 0; ///< denied with stale_store since start
    std::int64_t clock_behind_ms = 0;
  };
  std::optional<credentials_part> credentials;
  /// Data protection at rest (absent in a will).
  struct privacy_part {
    std::uint32_t pseudonym_epoch = 0;
    std::uint64_t pseudonym_epochs_live = 0;  ///< epoch keys still held
    std::int64_t pseudonym_epoch_since = 0;   ///< Unix ms the epoch in force began
    std::uint32_t data_key = 0;               ///< the data key that seals
    std::uint64_t data_keys_live = 0;
    bool resealing = false;
    std::uint64_t quarantined = 0;            ///< values held in quarantine now
    std::uint64_t quarantined_since_start = 0;
    std::uint64_t audit_pending = 0;          ///< audit records not yet acknowledged
    std::uint64_t audit_next_seq = 0;
    std::uint64_t audit_purged = 0;           ///< purged by retention since start
    std::uint64_t quarantine_purged = 0;      ///< purged by retention since start
    std::uint64_t epochs_destroyed = 0;       ///< since start
    std::uint64_t erasures = 0;               ///< erase_subject commands done since start
    std::uint32_t retention_days = 0;
  };
  std::optional<privacy_part> privacy;
  /// How the gateway is doing (absent in a will).
  struct health_part {
    std::int64_t uptime_s = 0;
    std::uint64_t locks_available = 0;   ///< heard from within coap.lock_silence_s
    double events_in_per_s = 0;          ///< stored, over the last interval
    double events_out_per_s = 0;         ///< acknowledged by the broker, same interval
    std::int64_t oldest_pending_age_s = 0; ///< 0 when nothing waits
    std::int64_t worker_stall_ms = 0;    ///< CAF worker's longest stall in the last minute
  };
  std::optional<health_part> health;
  /// The BLE transport (only when BLE locks are configured).
  struct ble_part {
    std::uint64_t connections = 0;      ///< sessions established since start
    std::uint64_t connect_failures = 0;
    std::uint32_t connected_now = 0;
    std::uint32_t peak_connected = 0;
    std::uint64_t messages = 0;         ///< authentic messages from locks
    std::uint64_t refused_forged = 0;
    std::uint64_t refused_replayed = 0;
    std::uint64_t refused_unconfigured = 0;
    std::uint64_t bad_messages = 0;
    std::uint64_t fragments_dropped = 0;
  };
  std::optional<ble_part> ble;
  /// The CoAP transport's sessions (absent in a will).
  struct coap_part {
    std::uint32_t sessions = 0;          ///< locks with a DTLS session now
    std::uint32_t peak_sessions = 0;
    std::uint32_t max_sessions = 0;      ///< coap.max_sessions
    std::uint64_t session_refusals = 0;  ///< handshakes refused at max_sessions
    std::uint64_t sessions_released = 0; ///< released after coap.idle_release_s
    std::uint64_t handshake_refusals = 0;
    std::uint64_t wrong_key_handshakes = 0;
    std::uint64_t requests = 0;
    std::uint64_t bad_requests = 0;
  };
  std::optional<coap_part> coap;
  /// Whether the disk takes writes (absent in a will).
  struct storage_part {
    bool ok = true;
    std::string error;          ///< the last fault while not ok
    std::int64_t since = 0;     ///< Unix ms the fault began, 0 when ok
    std::uint64_t faults = 0;   ///< failed commits since start
  };
  std::optional<storage_part> storage;
  std::optional<std::int64_t> client_cert_expires_at; ///< Unix ms of the client certificate's end
  /// Publishes the broker refused or failed since start (absent if none).
  struct refusals_part {
    std::uint64_t count = 0;
    std::int32_t last_reason_code = 0; ///< MQTT 5 reason code (0x87: not authorized)
    std::int64_t last_at = 0;          ///< Unix ms
  };
  std::optional<refusals_part> broker_refusals;
  /// Why the TLS files cannot reach the cloud (expired, missing, ...), if they cannot.
  std::optional<std::string> tls_problem;
  std::uint32_t cert_warning_days = 30; ///< `tls.expiring_soon` below this many days left
};

std::string encode_status(const gateway_status& status);

/// The retained last will: `{"schema", "site", "gateway", "state":"offline"}`.
std::string encode_offline_will(std::string_view site, std::string_view gateway);

} // namespace lockbridge::protocol
