#include "config/keys.hpp"

#include <algorithm>

#include "config/config.hpp"

namespace lockbridge::config {

namespace {

constexpr auto applied = on_reload::applied;
constexpr auto restart = on_reload::needs_restart;

// Adding a key: a row here (the reader refuses it as unknown until then);
// if it is `applied`, apply_reloadable below copies it and the component
// that uses it is told (actors/supervisor.cpp, reload).
constexpr key_rule rules[] = {
  {"gateway", "site", restart},
  {"gateway", "id", restart},
  {"gateway", "environment", restart},
  {"gateway", "pseudonym_key_file", restart}, // no longer used: an error naming it
  {"gateway", "log_level", applied},
  {"gateway", "time_zone", restart},
  {"gateway", "status_socket", restart},
  {"store", "state_dir", restart},
  {"store", "journal_max_mb", restart},
  {"store", "retention_days", restart},
  {"coap", "dtls_listen", restart},
  {"coap", "plain_listen", restart},
  {"coap", "full_retry_after_s", restart},
  {"coap", "lock_silence_s", applied},
  {"coap", "max_sessions", restart},
  {"coap", "idle_release_s", restart},
  {"coap", "receive_buffer_kb", restart},
  {"metrics", "listen", restart},
  {"ble", "adapter", restart},
  {"ble", "max_connections", restart},
  {"ble", "poll_interval_s", restart},
  {"ble", "connect_timeout_ms", restart},
  {"ble", "idle_release_ms", restart},
  {"ble", "max_hold_ms", restart},
  {"ble", "fragment_timeout_ms", restart},
  {"ble", "default_mtu", restart},
  {"mqtt", "broker", restart},
  {"mqtt", "brokers", restart},
  {"mqtt", "protocol", restart},
  {"mqtt", "client_id", restart},
  // The TLS files' contents are re-read on a reload and whenever they change
  // (a renewal in place); a new path needs a restart.
  {"mqtt", "ca_file", restart},
  {"mqtt", "cert_file", restart},
  {"mqtt", "key_file", restart},
  {"mqtt", "inflight_window", restart},
  {"mqtt", "max_events_per_message", restart},
  {"mqtt", "keepalive_s", restart},
  {"mqtt", "status_interval_s", restart},
  {"mqtt", "reconnect_min_ms", restart},
  {"mqtt", "reconnect_max_ms", restart},
  {"mqtt", "cert_warning_days", applied},
  {"credentials", "lookup_key_file", restart},
  {"credentials", "max_age_hours", restart},
  {"credentials", "offline_policy", restart},
  // A new key-encryption key (a new path or new content) re-wraps the data keys.
  {"security", "key_encryption_key_file", applied},
  {"security", "previous_key_encryption_key_file", restart},
  {"security", "pseudonym_epoch_days", restart},
  // [[locks]]: the set is applied in place (added, removed, re-keyed).
  {"locks", "id", applied},
  {"locks", "psk_file", applied},
  {"locks", "transport", applied},
  {"locks", "ble_address", applied},
  // [[doors]]: their policies are read at start.
  {"doors", "id", restart},
  {"doors", "offline_policy", restart},
};

on_reload rule_of(std::string_view name) {
  auto dot = name.find('.');
  auto section = name.substr(0, dot);
  auto key = dot == std::string_view::npos ? std::string_view{} : name.substr(dot + 1);
  for (const auto& r : rules)
    if (r.section == section && (key.empty() || r.key == key))
      return r.reload;
  return restart;
}

} // namespace

std::span<const key_rule> key_rules() noexcept {
  return rules;
}

std::vector<std::string_view> keys_of(std::string_view section) {
  std::vector<std::string_view> out;
  for (const auto& r : rules)
    if (r.section == section)
      out.push_back(r.key);
  return out;
}

std::vector<std::string_view> sections() {
  std::vector<std::string_view> out;
  for (const auto& r : rules)
    if (std::find(out.begin(), out.end(), r.section) == out.end())
      out.push_back(r.section);
  return out;
}

reload_plan plan_reload(const gateway_config& running, const gateway_config& next) {
  reload_plan plan;
  auto consider = [&](const std::string& name) {
    auto a = running.values.find(name);
    auto b = next.values.find(name);
    bool same = (a == running.values.end()) == (b == next.values.end())
                && (a == running.values.end() || a->second == b->second);
    if (same)
      return;
    (rule_of(name) == applied ? plan.applied : plan.needs_restart).push_back(name);
  };
  std::vector<std::string> names;
  for (const auto& [name, text] : running.values)
    names.push_back(name);
  for (const auto& [name, text] : next.values)
    if (!running.values.contains(name))
      names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const auto& name : names)
    consider(name);
  return plan;
}

void apply_reloadable(gateway_config& running, const gateway_config& next) {
  running.log_level = next.log_level;
  running.coap.lock_silence_s = next.coap.lock_silence_s;
  running.mqtt.cert_warning_days = next.mqtt.cert_warning_days;
  running.security.kek_file = next.security.kek_file;
  running.locks = next.locks;
  for (const auto& r : rules) {
    if (r.reload != applied)
      continue;
    bool array = r.section == "locks" || r.section == "doors";
    auto name = array ? std::string{r.section} : std::string{r.section} + "." + std::string{r.key};
    if (auto it = next.values.find(name); it != next.values.end())
      running.values[name] = it->second;
    else
      running.values.erase(name);
  }
}

} // namespace lockbridge::config
