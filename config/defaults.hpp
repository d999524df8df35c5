#pragma once

#include <cstdint>

/// Every default of lockbridge's configuration, in one place
/// (docs/configuration.md lists them with their keys).
namespace lockbridge::defaults {

inline constexpr const char* config_file = "/etc/lockbridge/lockbridge.toml";
inline constexpr const char* state_dir = "/var/lib/lockbridge";
inline constexpr std::uint64_t journal_max_mb = 512;
inline constexpr std::uint32_t retention_days = 90;
inline constexpr std::uint32_t max_retention_days = 90;
inline constexpr const char* dtls_listen = "0.0.0.0:5684";
inline constexpr std::uint32_t inflight_window = 100;
inline constexpr std::uint32_t max_events_per_message = 100;
inline constexpr std::uint32_t keepalive_s = 30;
inline constexpr std::uint32_t status_interval_s = 60;
/// A lock not heard from for this long is published as unavailable.
inline constexpr std::uint32_t lock_silence_s = 300;
/// Warn (log and status) when the client certificate ends within this many days.
inline constexpr std::uint32_t cert_warning_days = 30;
inline constexpr std::uint32_t reconnect_min_ms = 500;
inline constexpr std::uint32_t reconnect_max_ms = 30000;
inline constexpr std::uint32_t full_retry_after_s = 30;
/// Locks served over CoAP at once (bounds the DTLS sessions' memory).
inline constexpr std::uint32_t coap_max_sessions = 1000;
/// 0: a lock's DTLS session is kept while the lock is there.
inline constexpr std::uint32_t coap_idle_release_s = 0;
/// Room for a burst of lock requests on each CoAP socket.
inline constexpr std::uint32_t coap_receive_buffer_kb = 4096;
inline constexpr const char* time_zone = "UTC";
inline constexpr const char* status_socket = "/run/lockbridge/status.sock";
inline constexpr std::uint32_t credentials_max_age_hours = 168;
inline constexpr std::uint32_t pseudonym_epoch_days = 30;
/// The systemd credential name of the key-encryption key (LoadCredential=).
inline constexpr const char* kek_credential = "lockbridge.kek";
inline constexpr const char* offline_policy = "fail_secure";
/// BLE (docs/lock-protocol.md, "BLE").
inline constexpr const char* ble_adapter = "hci0";
inline constexpr std::uint32_t ble_max_connections = 2;
inline constexpr std::uint32_t ble_poll_interval_s = 120;
inline constexpr std::uint32_t ble_connect_timeout_ms = 10000;
inline constexpr std::uint32_t ble_idle_release_ms = 1500;
inline constexpr std::uint32_t ble_max_hold_ms = 10000;
inline constexpr std::uint32_t ble_fragment_timeout_ms = 2000;
inline constexpr std::uint32_t ble_default_mtu = 23;
inline constexpr std::uint32_t min_psk_bytes = 16;
inline constexpr std::uint32_t max_psk_bytes = 64;

} // namespace lockbridge::defaults
