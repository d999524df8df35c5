#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockbridge::config {

enum class run_environment { production, development };

/// A UDP listen address.
struct listen_address {
  std::string host; ///< numeric IPv4 or IPv6 (without brackets)
  std::uint16_t port = 0;
};

/// "host:port" or "[ipv6]:port" in two, the brackets dropped; no port when
/// there is no ':' to start one. Nothing when the brackets do not close or
/// something other than ":port" follows them.
struct host_and_port {
  std::string host;
  std::optional<std::string> port;
};
std::optional<host_and_port> split_host_port(std::string_view text);

/// A port's text as a number from 1 to 65535, or nothing.
std::optional<std::uint16_t> port_number(std::string_view text);

/// How a lock reaches the gateway.
enum class lock_transport { coap, ble };

struct lock_config {
  std::string id;                   ///< also the DTLS PSK identity
  std::filesystem::path psk_file;   ///< the lock's pre-shared key (DTLS PSK; BLE message key)
  lock_transport transport = lock_transport::coap;
  std::string ble_address;          ///< "AA:BB:CC:DD:EE:FF", upper case; BLE locks only
};

/// BLE locks through BlueZ (docs/lock-protocol.md, "BLE").
struct ble_config {
  std::string adapter;              ///< BlueZ adapter name, e.g. "hci0"
  std::uint32_t max_connections = 0; ///< concurrent lock connections on the adapter
  std::uint32_t poll_interval_s = 0; ///< a quiet lock is still visited this often
  std::uint32_t connect_timeout_ms = 0;
  std::uint32_t idle_release_ms = 0; ///< a connection with nothing to do is released after
  std::uint32_t max_hold_ms = 0;     ///< longest hold while other locks wait
  std::uint32_t fragment_timeout_ms = 0; ///< a message missing fragments this long is dropped
  std::uint32_t default_mtu = 0;     ///< ATT MTU used when BlueZ does not report one
};

struct coap_config {
  std::vector<listen_address> dtls_listen;
  std::vector<listen_address> plain_listen; ///< development only
  std::uint32_t full_retry_after_s = 0;     ///< Max-Age of a 5.03 when the journal is full
  std::uint32_t lock_silence_s = 0;         ///< a lock silent longer is unavailable
  std::uint32_t max_sessions = 0;           ///< locks served at once; more are refused
  std::uint32_t idle_release_s = 0;         ///< release a session unused this long (0: never)
  std::uint32_t receive_buffer_kb = 0;      ///< UDP receive buffer of each CoAP socket
};

/// The MQTT version the uplink speaks (`mqtt.protocol`).
enum class mqtt_protocol {
  v5,        ///< "5"
  v3_1_1,    ///< "3.1.1" (RabbitMQ 3.x, older brokers)
  automatic, ///< "auto": 5 first, 3.1.1 with a broker that does not take 5
};

struct mqtt_config {
  /// The brokers to use, in order of preference: ssl://host:port (mqtts://
  /// also accepted); `mqtt.brokers`, or the one `mqtt.broker`.
  std::vector<std::string> brokers;
  mqtt_protocol protocol = mqtt_protocol::automatic;
  std::string client_id;
  std::filesystem::path ca_file;
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
  std::uint32_t inflight_window = 0;
  std::uint32_t max_events_per_message = 0;
  std::uint32_t keepalive_s = 0;
  std::uint32_t status_interval_s = 0;
  std::uint32_t reconnect_min_ms = 0;
  std::uint32_t reconnect_max_ms = 0;
  std::uint32_t cert_warning_days = 0; ///< warn when the certificate ends sooner
};

/// What a door does when the credential set is older than its maximum age.
enum class offline_policy {
  fail_secure,     ///< deny everything with reason stale_store
  keep_last_known, ///< keep answering from the old set
};

struct door_config {
  std::string id;
  offline_policy policy = offline_policy::fail_secure;
};

struct credentials_config {
  std::filesystem::path lookup_key_file; ///< HMAC key for the store's lookup keys
  std::uint32_t max_age_hours = 0;       ///< since the last successful sync
  offline_policy default_policy = offline_policy::fail_secure;
  std::vector<door_config> doors;        ///< doors with their own policy
};

/// Keys at rest (docs/security.md).
struct security_config {
  /// The key-encryption key that wraps the data keys: from
  /// security.key_encryption_key_file, else $CREDENTIALS_DIRECTORY/lockbridge.kek.
  std::filesystem::path kek_file;
  /// The one it replaces, for the first start after a rotation done offline.
  std::filesystem::path previous_kek_file;
  std::uint32_t pseudonym_epoch_days = 0; ///< a new pseudonym epoch this often
};

struct store_config {
  std::filesystem::path state_dir;
  std::uint64_t journal_max_bytes = 0;
  std::uint32_t retention_days = 0;
};

/// The whole validated configuration of one gateway.
struct gateway_config {
  std::filesystem::path source;   ///< the file it came from
  std::string site;
  std::string gateway;
  run_environment environment = run_environment::production;
  std::string log_level;
  std::string time_zone;          ///< IANA name; schedules are evaluated in it
  std::filesystem::path status_socket; ///< `lockbridge status` asks here
  credentials_config credentials;
  security_config security;
  store_config store;
  coap_config coap;
  mqtt_config mqtt;
  ble_config ble;
  /// The OpenMetrics endpoint (`[metrics] listen`); none by default.
  std::optional<listen_address> metrics_listen;
  std::vector<lock_config> locks;
  /// Each key as the file (with overrides) set it, in TOML: "section.key",
  /// and "locks"/"doors" for the entry lists. A reload compares these
  /// (config/keys.hpp); a key left to its default is absent.
  std::map<std::string, std::string> values;
};

/// "aa:bb:cc:dd:ee:ff" -> "AA:BB:CC:DD:EE:FF" (BlueZ's spelling); nullopt if
/// the text is not six hexadecimal pairs separated by ':'.
std::optional<std::string> normalise_ble_address(std::string_view text);

/// One problem in a config file: where, which key, what was expected.
struct config_error {
  std::string file;
  std::uint32_t line = 0;   ///< 0 when the problem is not tied to a line
  std::uint32_t column = 0;
  std::string key;          ///< dotted path, e.g. "locks[2].psk_file"
  std::string message;

  /// "file:line:column: key: message"
  [[nodiscard]] std::string to_string() const;
};

/// The outcome of loading: a config, or every error found (not only the first).
struct load_result {
  std::optional<gateway_config> config;
  std::vector<config_error> errors;
  /// Problems that do not stop the gateway (the cloud's TLS files unusable).
  std::vector<config_error> warnings;
};

/// One key set from outside the file: `key` is "section.key" (a key of a
/// top-level table; [[locks]] and [[doors]] cannot be overridden), `value` a
/// TOML value (`30`, `"debug"`, `["127.0.0.1:5684"]`; text that is not valid
/// TOML counts as a string), `origin` says where it came from for errors.
struct override_value {
  std::string key;
  std::string value;
  std::string origin;
};

/// The overrides in the environment: `LOCKBRIDGE_<SECTION>__<KEY>=value`
/// (upper case, two underscores between section and key), e.g.
/// `LOCKBRIDGE_GATEWAY__LOG_LEVEL=debug`. Other variables are ignored.
std::vector<override_value> overrides_from_environment(char** environment);

/// Why a config is read: to run (every referenced file is checked and the
/// secrets read), or only to locate the running daemon's socket (`status`,
/// `reload`, the stats commands), by a member of the `lockbridge` group who
/// cannot read the secrets: values are validated, files are not opened; or
/// to check it (`check-config`): as to run, and also what the machine must
/// provide before the daemon can start (a directory for the status socket),
/// which a start finds again and ends with the environment's exit code.
enum class load_purpose { run, locate, check };

/// Reads, parses and validates `file`, including that referenced files exist
/// and secret files are not readable by others in production. `overrides`
/// apply in order on top of the file (defaults < file < environment <
/// command line: pass the environment's first).
load_result load(const std::filesystem::path& file,
                 const std::vector<override_value>& overrides = {},
                 load_purpose purpose = load_purpose::run);

/// The same from text (tests); relative paths resolve against `base_dir`.
load_result load_from_string(const std::string& text, const std::string& source_name,
                             const std::filesystem::path& base_dir,
                             const std::vector<override_value>& overrides = {},
                             load_purpose purpose = load_purpose::run);

} // namespace lockbridge::config
