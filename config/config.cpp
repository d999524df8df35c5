#include "config/config.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <arpa/inet.h>
#include <unistd.h>

#include <date/tz.h>
#include <toml++/toml.h>

#include "config/defaults.hpp"
#include "config/keys.hpp"
#include "config/secrets.hpp"
#include "config/tls_check.hpp"
#include "protocols/cbor.hpp"
#include "protocols/cloud_messages.hpp"

namespace lockbridge::config {

std::optional<std::string> normalise_ble_address(std::string_view text) {
  if (text.size() != 17)
    return std::nullopt;
  std::string out{text};
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i % 3 == 2) {
      if (out[i] != ':')
        return std::nullopt;
    } else if (std::isxdigit(static_cast<unsigned char>(out[i])) == 0) {
      return std::nullopt;
    } else {
      out[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[i])));
    }
  }
  return out;
}

std::string config_error::to_string() const {
  std::string out = file;
  if (line > 0)
    out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!key.empty())
    out += key + ": ";
  return out + message;
}

std::optional<host_and_port> split_host_port(std::string_view text) {
  if (text.starts_with("[")) {
    auto close = text.find(']');
    if (close == std::string_view::npos)
      return std::nullopt;
    auto after = text.substr(close + 1);
    if (!after.empty() && !after.starts_with(":"))
      return std::nullopt;
    host_and_port out{std::string{text.substr(1, close - 1)}, std::nullopt};
    if (!after.empty())
      out.port = std::string{after.substr(1)};
    return out;
  }
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos)
    return host_and_port{std::string{text}, std::nullopt};
  return host_and_port{std::string{text.substr(0, colon)}, std::string{text.substr(colon + 1)}};
}

std::optional<std::uint16_t> port_number(std::string_view text) {
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || ptr != text.data() + text.size() || value == 0 || value > 65535)
    return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

namespace {

/// What is wrong with the host and port of an ssl:// or mqtts:// broker
/// URI, or nothing. Paho would find out only when it connects.
std::optional<std::string> broker_address_problem(const std::string& uri) {
  auto parts = split_host_port(std::string_view{uri}.substr(uri.find("://") + 3));
  if (!parts)
    return "expected ssl://[ipv6]:port, got \"" + uri + "\"";
  if (parts->host.empty())
    return "no host in \"" + uri + "\"; expected ssl://host:port";
  if (!parts->port || parts->port->empty())
    return "no port in \"" + uri + "\"; expected ssl://host:port (8883 is MQTT over TLS's)";
  if (!port_number(*parts->port))
    return "the port of \"" + uri + "\" is not a number from 1 to 65535";
  return std::nullopt;
}

/// Walks one TOML document, collecting every error with its position.
class reader {
public:
  reader(std::string file, std::filesystem::path base_dir, bool check_files = true,
         bool check_environment = false)
    : file_(std::move(file)), base_(std::move(base_dir)), check_files_(check_files),
      check_environment_(check_environment) {}

  /// Whether what the machine must provide is checked too (check-config).
  [[nodiscard]] bool check_environment() const noexcept { return check_environment_; }

  /// Whether referenced files are opened and checked (not when the config is
  /// only read to find the running daemon's socket, by a user who may not
  /// read the secrets).
  [[nodiscard]] bool check_files() const noexcept { return check_files_; }

  void error(const toml::source_region& where, std::string key, std::string message) {
    // A value set from outside the file names its origin instead.
    const auto& file = where.path && *where.path != file_ ? *where.path : file_;
    errors_.push_back(config_error{file, static_cast<std::uint32_t>(where.begin.line),
                                   static_cast<std::uint32_t>(where.begin.column),
                                   std::move(key), std::move(message)});
  }

  void error(std::string key, std::string message) {
    errors_.push_back(config_error{file_, 0, 0, std::move(key), std::move(message)});
  }

  /// A problem that does not stop the gateway (it serves the locks without
  /// the cloud): reported, never refused.
  void warning(const toml::source_region& where, std::string key, std::string message) {
    const auto& file = where.path && *where.path != file_ ? *where.path : file_;
    warnings_.push_back(config_error{file, static_cast<std::uint32_t>(where.begin.line),
                                     static_cast<std::uint32_t>(where.begin.column),
                                     std::move(key), std::move(message)});
  }
  std::vector<config_error>& warnings() { return warnings_; }

  /// Reports keys of `tbl` not in `known`.
  void only_keys(const toml::table& tbl, const std::string& path,
                 const std::vector<std::string_view>& known) {
    for (auto&& [k, v] : tbl) {
      bool found = false;
      for (auto name : known)
        found = found || name == k.str();
      if (!found) {
        std::string list;
        for (auto name : known)
          list += (list.empty() ? "" : ", ") + std::string{name};
        // A key set by an override has no position of its own: use its value's.
        error(k.source().path ? k.source() : v.source(), join(path, k.str()),
              "unknown key; expected one of: " + list);
      }
    }
  }

  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string{key} : path + "." + std::string{key};
  }

  const toml::table* table(const toml::table& parent, const std::string& path,
                           std::string_view key, bool required) {
    auto node = parent.get(key);
    if (node == nullptr) {
      if (required)
        error(parent.source(), join(path, key), "missing table [" + join(path, key) + "]");
      return nullptr;
    }
    if (!node->is_table()) {
      error(node->source(), join(path, key), "expected a table");
      return nullptr;
    }
    return node->as_table();
  }

  std::optional<std::string> text(const toml::table& tbl, const std::string& path,
                                  std::string_view key, std::optional<std::string> fallback) {
    auto node = tbl.get(key);
    if (node == nullptr) {
      if (!fallback)
        error(tbl.source(), join(path, key), "missing; expected a string");
      return fallback;
    }
    if (!node->is_string()) {
      error(node->source(), join(path, key),
            std::string{"expected a string, got "} + type_name(*node));
      return std::nullopt;
    }
    return node->as_string()->get();
  }

  std::optional<std::string> id(const toml::table& tbl, const std::string& path,
                                std::string_view key) {
    auto value = text(tbl, path, key, std::nullopt);
    if (value && !protocol::is_valid_id(*value)) {
      error(tbl.get(key)->source(), join(path, key),
            "expected 1 to 64 of letters, digits, '_' and '-', got \"" + *value + "\"");
      return std::nullopt;
    }
    return value;
  }

  std::optional<std::uint64_t> integer(const toml::table& tbl, const std::string& path,
                                       std::string_view key, std::uint64_t fallback,
                                       std::uint64_t min, std::uint64_t max) {
    auto node = tbl.get(key);
    if (node == nullptr)
      return fallback;
    if (!node->is_integer()) {
      error(node->source(), join(path, key),
            std::string{"expected an integer, got "} + type_name(*node));
      return std::nullopt;
    }
    auto v = node->as_integer()->get();
    if (v < 0 || static_cast<std::uint64_t>(v) < min || static_cast<std::uint64_t>(v) > max) {
      error(node->source(), join(path, key),
            "expected an integer from " + std::to_string(min) + " to " + std::to_string(max)
              + ", got " + std::to_string(v));
      return std::nullopt;
    }
    return static_cast<std::uint64_t>(v);
  }

  /// A path relative to the config file's directory; checked to exist and
  /// be readable (not when only locating the daemon). With `cloud_side`
  /// (the [mqtt] TLS files), a missing or unreadable file is a warning: the
  /// gateway serves the locks without the cloud meanwhile. A secret readable
  /// by others is an error either way.
  std::optional<std::filesystem::path> file(const toml::table& tbl, const std::string& path,
                                            std::string_view key, bool secret, bool production,
                                            bool cloud_side = false) {
    auto value = text(tbl, path, key, std::nullopt);
    if (!value)
      return std::nullopt;
    const auto& where = tbl.get(key)->source();
    if (value->empty()) {
      error(where, join(path, key), "expected a file path, got an empty string");
      return std::nullopt;
    }
    std::filesystem::path p{*value};
    if (p.is_relative())
      p = base_ / p;
    if (!check_files_)
      return p;
    // True if the path is unusable: an error, or for the cloud's files a warning.
    auto unusable = [&](const std::string& message) {
      if (!cloud_side) {
        error(where, join(path, key), message);
        return true;
      }
      warning(where, join(path, key),
              message + " (the gateway starts and serves the locks, but cannot reach the cloud "
                        "until the file is in place; no restart needed)");
      return false;
    };
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) {
      if (unusable("file " + p.string() + " does not exist or is not a regular file"))
        return std::nullopt;
    } else if (::access(p.c_str(), R_OK) != 0) {
      if (unusable("file " + p.string() + " is not readable by this user"))
        return std::nullopt;
    } else if (secret && production && world_readable(p)) {
      error(where, join(path, key),
            "secret file " + p.string() + " is readable by others; run: chmod o-rwx " + p.string());
      return std::nullopt;
    }
    return p;
  }

  std::optional<listen_address> address(const toml::node& node, const std::string& key) {
    if (!node.is_string()) {
      error(node.source(), key, "expected a string \"host:port\"");
      return std::nullopt;
    }
    const auto& s = node.as_string()->get();
    auto parts = split_host_port(s);
    if (!parts || !parts->port) {
      error(node.source(), key,
            s.starts_with("[") ? "expected \"[ipv6]:port\", got \"" + s + "\""
                               : "expected \"host:port\", got \"" + s + "\"");
      return std::nullopt;
    }
    const auto& host = parts->host;
    unsigned char buf[16];
    if (inet_pton(AF_INET, host.c_str(), buf) != 1 && inet_pton(AF_INET6, host.c_str(), buf) != 1) {
      error(node.source(), key, "expected a numeric IPv4 or IPv6 address, got \"" + host + "\"");
      return std::nullopt;
    }
    auto port = port_number(*parts->port);
    if (!port) {
      error(node.source(), key, "expected a port from 1 to 65535, got \"" + *parts->port + "\"");
      return std::nullopt;
    }
    return listen_address{host, *port};
  }

  std::vector<listen_address> addresses(const toml::table& tbl, const std::string& path,
                                        std::string_view key,
                                        std::vector<std::string> fallback) {
    std::vector<listen_address> out;
    auto node = tbl.get(key);
    if (node == nullptr) {
      for (const auto& s : fallback) {
        toml::value<std::string> v{s};
        if (auto a = address(v, join(path, key)))
          out.push_back(*a);
      }
      return out;
    }
    if (!node->is_array()) {
      error(node->source(), join(path, key), "expected an array of \"host:port\" strings");
      return out;
    }
    std::size_t i = 0;
    for (auto& item : *node->as_array()) {
      auto name = join(path, key) + "[" + std::to_string(i) + "]";
      if (auto a = address(item, name)) {
        auto same = std::find_if(out.begin(), out.end(), [&](const listen_address& b) {
          return b.host == a->host && b.port == a->port;
        });
        if (same != out.end())
          error(item.source(), name,
                "\"" + item.as_string()->get() + "\" is listed twice; remove one (a port is "
                "bound once)");
        else
          out.push_back(*a);
      }
      ++i;
    }
    return out;
  }

  static std::string type_name(const toml::node& node) {
    switch (node.type()) {
      case toml::node_type::string: return "a string";
      case toml::node_type::integer: return "an integer";
      case toml::node_type::floating_point: return "a float";
      case toml::node_type::boolean: return "a boolean";
      case toml::node_type::table: return "a table";
      case toml::node_type::array: return "an array";
      default: return "a date or time";
    }
  }

  const std::filesystem::path& base() const { return base_; }
  std::vector<config_error>& errors() { return errors_; }

private:
  std::string file_;
  std::filesystem::path base_;
  std::vector<config_error> errors_;
  std::vector<config_error> warnings_;
  bool check_files_ = true;
  bool check_environment_ = false;
};

/// A lock's key as read, kept to compare with the gateway's own keys.
struct lock_key {
  toml::source_region where;
  std::string key; ///< "locks[N].psk_file"
  std::vector<std::uint8_t> bytes;
};

/// A lock holding one of the gateway's own keys (as the file's text or as
/// its 32 bytes) gives that key away to anyone who reads the lock.
void check_lock_keys_against(reader& r, const std::vector<lock_key>& locks,
                             const std::filesystem::path& file,
                             const std::array<std::uint8_t, 32>& key, const char* name) {
  auto text = read_psk(file); // the file's bytes as a lock would hold them
  for (const auto& l : locks) {
    bool same = std::equal(l.bytes.begin(), l.bytes.end(), key.begin(), key.end())
                || (text && *text == l.bytes);
    if (same)
      r.error(l.where, l.key,
              std::string{"holds the same key as "} + name + "; a lock's key must be its "
              "own (lockbridge provision lock --force makes one)");
  }
}

/// A section that may be absent, without a second error if it is not a table
/// (the reader said so where it read it).
const toml::table& section_of(const toml::table& root, const char* name) {
  static const toml::table none;
  const auto* t = root.get_as<toml::table>(name);
  return t != nullptr ? *t : none;
}

/// [gateway]; returns whether the environment is production.
bool read_gateway(reader& r, const toml::table& root, gateway_config& cfg) {
  bool production = true;
  if (auto gw = r.table(root, "", "gateway", true)) {
    r.only_keys(*gw, "gateway", keys_of("gateway"));
    if (auto v = r.text(*gw, "gateway", "status_socket", defaults::status_socket)) {
      std::filesystem::path p{*v};
      cfg.status_socket = p.is_relative() ? r.base() / p : p;
    }
    if (auto env = r.text(*gw, "gateway", "environment", "production")) {
      if (*env == "production") {
        cfg.environment = run_environment::production;
      } else if (*env == "development") {
        cfg.environment = run_environment::development;
        production = false;
      } else {
        r.error(gw->get("environment")->source(), "gateway.environment",
                "expected \"production\" or \"development\", got \"" + *env + "\"");
      }
    }
    if (auto v = r.id(*gw, "gateway", "site"))
      cfg.site = *v;
    if (auto v = r.id(*gw, "gateway", "id"))
      cfg.gateway = *v;
    if (auto node = gw->get("pseudonym_key_file"))
      r.error(node->source(), "gateway.pseudonym_key_file",
              "no longer used: pseudonym keys are generated, sealed in the state and rotated by "
              "the gateway (security.pseudonym_epoch_days); delete this line");
    if (auto v = r.text(*gw, "gateway", "time_zone", defaults::time_zone)) {
      try {
        date::locate_zone(*v);
        cfg.time_zone = *v;
      } catch (const std::exception&) {
        r.error(gw->get("time_zone")->source(), "gateway.time_zone",
                "unknown time zone \"" + *v
                  + "\"; expected an IANA name such as \"Europe/Rome\" (see "
                    "/usr/share/zoneinfo; package tzdata)");
      }
    }
    if (auto v = r.text(*gw, "gateway", "log_level", "info")) {
      static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error"};
      if (levels.contains(*v))
        cfg.log_level = *v;
      else
        r.error(gw->get("log_level")->source(), "gateway.log_level",
                "expected one of trace, debug, info, warn, error, got \"" + *v + "\"");
    }
  }

  return production;
}

/// [store], and the status socket's directory.
void read_store(reader& r, const toml::table& root, gateway_config& cfg, bool production) {
  static const toml::table no_table;
  auto store = r.table(root, "", "store", false);
  const auto& st = store != nullptr ? *store : no_table;
  r.only_keys(st, "store", keys_of("store"));
  if (auto v = r.text(st, "store", "state_dir", defaults::state_dir)) {
    std::filesystem::path p{*v};
    cfg.store.state_dir = p.is_relative() ? r.base() / p : p;
    if (p.is_relative() && production)
      r.error(st.get("state_dir")->source(), "store.state_dir",
              "\"" + *v + "\" is relative, so the state would live beside the config file ("
                + cfg.store.state_dir.string() + "), which the service may not write "
                "(ProtectSystem=strict); give an absolute path such as "
                + std::string{defaults::state_dir});
  }
  // The daemon makes its socket at start and refuses to start without the
  // directory; systemd's RuntimeDirectory= makes the default one.
  if (const auto* node = root["gateway"]["status_socket"].node();
      node != nullptr && r.check_environment()) {
    auto dir = cfg.status_socket.parent_path();
    std::error_code ec;
    if (dir != std::filesystem::path{defaults::status_socket}.parent_path()
        && !std::filesystem::is_directory(dir, ec))
      r.error(node->source(), "gateway.status_socket",
              "the directory " + dir.string() + " does not exist, and the daemon would refuse to "
              "start without it: create it (owned by the service user), or leave the default "
              + std::string{defaults::status_socket} + " (the unit's RuntimeDirectory= makes it)");
  }
  if (auto v = r.integer(st, "store", "journal_max_mb", defaults::journal_max_mb, 1, 1 << 20))
    cfg.store.journal_max_bytes = *v << 20;
  if (auto v = r.integer(st, "store", "retention_days", defaults::retention_days, 1,
                         defaults::max_retention_days))
    cfg.store.retention_days = static_cast<std::uint32_t>(*v);

}

/// [coap].
void read_coap(reader& r, const toml::table& root, gateway_config& cfg, bool production) {
  static const toml::table no_table;
  auto coap = r.table(root, "", "coap", false);
  const auto& co = coap != nullptr ? *coap : no_table;
  r.only_keys(co, "coap", keys_of("coap"));
  if (auto v = r.integer(co, "coap", "lock_silence_s", defaults::lock_silence_s, 1, 86400))
    cfg.coap.lock_silence_s = static_cast<std::uint32_t>(*v);
  cfg.coap.dtls_listen = r.addresses(co, "coap", "dtls_listen", {defaults::dtls_listen});
  cfg.coap.plain_listen = r.addresses(co, "coap", "plain_listen", {});
  if (production && !cfg.coap.plain_listen.empty())
    r.error(co.get("plain_listen")->source(), "coap.plain_listen",
            "plain CoAP is refused in production; remove it or set gateway.environment = "
            "\"development\" on a test bench");
  if (auto v = r.integer(co, "coap", "full_retry_after_s", defaults::full_retry_after_s, 1, 3600))
    cfg.coap.full_retry_after_s = static_cast<std::uint32_t>(*v);
  if (auto v = r.integer(co, "coap", "max_sessions", defaults::coap_max_sessions, 1, 100000))
    cfg.coap.max_sessions = static_cast<std::uint32_t>(*v);
  if (auto v = r.integer(co, "coap", "receive_buffer_kb", defaults::coap_receive_buffer_kb, 64,
                         262144))
    cfg.coap.receive_buffer_kb = static_cast<std::uint32_t>(*v);
  if (auto v = r.integer(co, "coap", "idle_release_s", defaults::coap_idle_release_s, 0, 86400)) {
    if (*v > 0 && *v < 10)
      r.error(co.get("idle_release_s")->source(), "coap.idle_release_s",
              "expected 0 (keep sessions) or 10-86400 seconds; a shorter time makes every "
              "lock handshake again between two requests");
    else
      cfg.coap.idle_release_s = static_cast<std::uint32_t>(*v);
  }

}

/// [metrics].
void read_metrics(reader& r, const toml::table& root, gateway_config& cfg) {
  // The metrics endpoint: off unless an address is given. TCP, so it can
  // share a number with a UDP listener, but not be the status socket's.
  if (auto metrics = r.table(root, "", "metrics", false)) {
    r.only_keys(*metrics, "metrics", keys_of("metrics"));
    if (auto node = metrics->get("listen"))
      cfg.metrics_listen = r.address(*node, "metrics.listen");
  }

}

/// [ble].
void read_ble(reader& r, const toml::table& root, gateway_config& cfg) {
  static const toml::table no_table;
  auto ble = r.table(root, "", "ble", false);
  const auto& bl = ble != nullptr ? *ble : no_table;
  r.only_keys(bl, "ble", keys_of("ble"));
  if (auto v = r.text(bl, "ble", "adapter", std::string{defaults::ble_adapter})) {
    bool ok = !v->empty() && v->size() <= 32;
    for (char c : *v)
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_');
    if (ok)
      cfg.ble.adapter = *v;
    else
      r.error(bl.get("adapter")->source(), "ble.adapter",
              "expected a BlueZ adapter name such as \"hci0\" (letters, digits, '_'), got \""
                + *v + "\"");
  }
  auto ble_integer = [&](std::string_view key, std::uint32_t fallback, std::uint64_t min,
                         std::uint64_t max, std::uint32_t& out) {
    if (auto v = r.integer(bl, "ble", key, fallback, min, max))
      out = static_cast<std::uint32_t>(*v);
  };
  ble_integer("max_connections", defaults::ble_max_connections, 1, 16, cfg.ble.max_connections);
  ble_integer("poll_interval_s", defaults::ble_poll_interval_s, 1, 86400, cfg.ble.poll_interval_s);
  ble_integer("connect_timeout_ms", defaults::ble_connect_timeout_ms, 100, 120000,
              cfg.ble.connect_timeout_ms);
  ble_integer("idle_release_ms", defaults::ble_idle_release_ms, 10, 600000,
              cfg.ble.idle_release_ms);
  ble_integer("max_hold_ms", defaults::ble_max_hold_ms, 100, 3600000, cfg.ble.max_hold_ms);
  ble_integer("fragment_timeout_ms", defaults::ble_fragment_timeout_ms, 50, 60000,
              cfg.ble.fragment_timeout_ms);
  ble_integer("default_mtu", defaults::ble_default_mtu, 23, 517, cfg.ble.default_mtu);

}

/// mqtt.broker (one) or mqtt.brokers (several, in order of preference).
void read_brokers(reader& r, const toml::table& mq_table, gateway_config& cfg) {
  const auto* mq = &mq_table;
  // One broker (`broker`) or several in order of preference (`brokers`:
  // the nodes of a cluster, or a fallback).
  auto broker_uri = [&](const toml::node& node, const std::string& key) {
    if (!node.is_string()) {
      r.error(node.source(), key, "expected an ssl://host:port URI string");
      return;
    }
    const auto& v = node.as_string()->get();
    if (!v.starts_with("ssl://") && !v.starts_with("mqtts://"))
      r.error(node.source(), key,
              "expected an ssl://host:port URI (the cloud link is always TLS), got \"" + v
                + "\"");
    else if (auto problem = broker_address_problem(v))
      r.error(node.source(), key, *problem);
    else if (std::find(cfg.mqtt.brokers.begin(), cfg.mqtt.brokers.end(), v)
             != cfg.mqtt.brokers.end())
      r.error(node.source(), key, "\"" + v + "\" is listed twice; remove one");
    else
      cfg.mqtt.brokers.push_back(v);
  };
  const auto* one = mq->get("broker");
  const auto* several = mq->get("brokers");
  if (one != nullptr && several != nullptr) {
    r.error(several->source(), "mqtt.brokers",
            "give mqtt.broker (one) or mqtt.brokers (several), not both");
  } else if (one != nullptr) {
    broker_uri(*one, "mqtt.broker");
  } else if (several != nullptr) {
    if (!several->is_array() || several->as_array()->empty()
        || several->as_array()->size() > 16) {
      r.error(several->source(), "mqtt.brokers",
              "expected an array of 1 to 16 \"ssl://host:port\" strings, in order of "
              "preference");
    } else {
      std::size_t i = 0;
      for (const auto& item : *several->as_array())
        broker_uri(item, "mqtt.brokers[" + std::to_string(i++) + "]");
    }
  } else {
    r.error(mq->source(), "mqtt.broker",
            "missing: the broker's ssl://host:port (or mqtt.brokers for several)");
  }
}

/// mqtt.protocol: "5", "3.1.1" or "auto", quoted.
void read_mqtt_protocol(reader& r, const toml::table& mq_table, gateway_config& cfg) {
  const auto* mq = &mq_table;
  if (const auto* p = mq->get("protocol"); p != nullptr && !p->is_string())
    r.error(p->source(), "mqtt.protocol",
            "expected \"5\", \"3.1.1\" or \"auto\" as a string (quote it: protocol = "
            "\"5\")");
  else if (auto v = r.text(*mq, "mqtt", "protocol", std::string{"auto"})) {
    if (*v == "5")
      cfg.mqtt.protocol = mqtt_protocol::v5;
    else if (*v == "3.1.1")
      cfg.mqtt.protocol = mqtt_protocol::v3_1_1;
    else if (*v == "auto")
      cfg.mqtt.protocol = mqtt_protocol::automatic;
    else
      r.error(mq->get("protocol")->source(), "mqtt.protocol",
              "expected \"5\", \"3.1.1\" or \"auto\" (5 first, then 3.1.1), got \"" + *v
                + "\"");
  }
}

/// The cloud's TLS files as the gateway will use them: warnings, not errors
/// (the doors never wait for the cloud).
void check_mqtt_certificate(reader& r, const toml::table& mq_table, const gateway_config& cfg) {
  const auto* mq = &mq_table;
  if (r.check_files() && !cfg.mqtt.ca_file.empty() && !cfg.mqtt.cert_file.empty()
      && !cfg.mqtt.key_file.empty())
    for (const auto& p : check_tls_files(cfg.mqtt.ca_file, cfg.mqtt.cert_file, cfg.mqtt.key_file))
      r.warning(mq->get(p.which)->source(), "mqtt." + p.which,
                p.message + " (the gateway starts and serves the locks, but cannot reach the "
                            "cloud until this is fixed; no restart needed)");
  if (r.check_files() && !cfg.mqtt.cert_file.empty() && !cfg.gateway.empty())
    if (auto cn = certificate_common_name(cfg.mqtt.cert_file); cn && *cn != cfg.gateway)
      r.warning(mq->get("cert_file")->source(), "mqtt.cert_file",
                "its common name is \"" + *cn + "\", not gateway.id \"" + cfg.gateway
                  + "\": the broker ACL lockbridge ships (config/mosquitto.acl.example, with "
                    "use_identity_as_username) gives a client the topics of the name in its "
                    "certificate, so this gateway would be refused its own; have the "
                    "certificate issued for CN=" + cfg.gateway + ", or adapt the ACL");
}

/// [mqtt].
void read_mqtt(reader& r, const toml::table& root, gateway_config& cfg, bool production) {
  if (auto mq = r.table(root, "", "mqtt", true)) {
    r.only_keys(*mq, "mqtt", keys_of("mqtt"));
    read_brokers(r, *mq, cfg);
    read_mqtt_protocol(r, *mq, cfg);
    if (auto v = r.text(*mq, "mqtt", "client_id", std::string{}))
      cfg.mqtt.client_id = *v;
    // The cloud's files: missing or unreadable ones are warnings, not
    // errors. Doors never wait for the cloud: the gateway starts, serves
    // the locks, and connects once usable files are in place.
    if (auto v = r.file(*mq, "mqtt", "ca_file", false, production, true))
      cfg.mqtt.ca_file = *v;
    if (auto v = r.file(*mq, "mqtt", "cert_file", false, production, true))
      cfg.mqtt.cert_file = *v;
    if (auto v = r.file(*mq, "mqtt", "key_file", true, production, true))
      cfg.mqtt.key_file = *v;
    if (auto v = r.integer(*mq, "mqtt", "inflight_window", defaults::inflight_window, 1, 65535))
      cfg.mqtt.inflight_window = static_cast<std::uint32_t>(*v);
    if (auto v = r.integer(*mq, "mqtt", "max_events_per_message",
                           defaults::max_events_per_message, 1, 1000))
      cfg.mqtt.max_events_per_message = static_cast<std::uint32_t>(*v);
    if (auto v = r.integer(*mq, "mqtt", "keepalive_s", defaults::keepalive_s, 5, 3600))
      cfg.mqtt.keepalive_s = static_cast<std::uint32_t>(*v);
    if (auto v = r.integer(*mq, "mqtt", "cert_warning_days", defaults::cert_warning_days, 1, 365))
      cfg.mqtt.cert_warning_days = static_cast<std::uint32_t>(*v);
    if (auto v = r.integer(*mq, "mqtt", "status_interval_s", defaults::status_interval_s, 1, 86400))
      cfg.mqtt.status_interval_s = static_cast<std::uint32_t>(*v);
    if (auto v = r.integer(*mq, "mqtt", "reconnect_min_ms", defaults::reconnect_min_ms, 10, 600000))
      cfg.mqtt.reconnect_min_ms = static_cast<std::uint32_t>(*v);
    if (auto v = r.integer(*mq, "mqtt", "reconnect_max_ms", defaults::reconnect_max_ms, 10, 3600000))
      cfg.mqtt.reconnect_max_ms = static_cast<std::uint32_t>(*v);
    check_mqtt_certificate(r, *mq, cfg);
    if (cfg.mqtt.reconnect_max_ms < cfg.mqtt.reconnect_min_ms)
      r.error(mq->source(), "mqtt.reconnect_max_ms", "must not be below mqtt.reconnect_min_ms");
  }
  if (cfg.mqtt.client_id.empty())
    cfg.mqtt.client_id = "lockbridge-" + cfg.site + "-" + cfg.gateway;

}

/// An offline_policy key of a table.
std::optional<offline_policy> policy_of(reader& r, const toml::table& tbl, const std::string& path,
                                        const char* fallback) {
  auto v = r.text(tbl, path, "offline_policy", std::string{fallback});
  if (!v)
    return std::nullopt;
  if (*v == "fail_secure")
    return offline_policy::fail_secure;
  if (*v == "keep_last_known")
    return offline_policy::keep_last_known;
  r.error(tbl.get("offline_policy")->source(), path + ".offline_policy",
          "expected \"fail_secure\" or \"keep_last_known\", got \"" + *v + "\"");
  return std::nullopt;
}

/// [credentials].
void read_credentials(reader& r, const toml::table& root, gateway_config& cfg, bool production) {
  if (auto creds = r.table(root, "", "credentials", true)) {
    r.only_keys(*creds, "credentials", keys_of("credentials"));
    if (auto v = r.file(*creds, "credentials", "lookup_key_file", true, production))
      cfg.credentials.lookup_key_file = *v;
    if (auto v = r.integer(*creds, "credentials", "max_age_hours",
                           defaults::credentials_max_age_hours, 1, 24 * 365))
      cfg.credentials.max_age_hours = static_cast<std::uint32_t>(*v);
    if (auto p = policy_of(r, *creds, "credentials", defaults::offline_policy))
      cfg.credentials.default_policy = *p;
  }
}

/// [security], and the key-encryption key systemd may hand over instead.
void read_security(reader& r, const toml::table& root, gateway_config& cfg) {
  if (auto sec = r.table(root, "", "security", false)) {
    r.only_keys(*sec, "security", keys_of("security"));
    // The key-encryption key must not be readable by others in any environment.
    if (sec->get("key_encryption_key_file") != nullptr)
      if (auto v = r.file(*sec, "security", "key_encryption_key_file", true, true))
        cfg.security.kek_file = *v;
    if (sec->get("previous_key_encryption_key_file") != nullptr)
      if (auto v = r.file(*sec, "security", "previous_key_encryption_key_file", true, true))
        cfg.security.previous_kek_file = *v;
    if (auto v = r.integer(*sec, "security", "pseudonym_epoch_days", defaults::pseudonym_epoch_days,
                           1, defaults::max_retention_days))
      cfg.security.pseudonym_epoch_days = static_cast<std::uint32_t>(*v);
  } else {
    cfg.security.pseudonym_epoch_days = defaults::pseudonym_epoch_days;
  }
  if (cfg.security.kek_file.empty()
      && !root["security"]["key_encryption_key_file"]) {
    const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
    std::filesystem::path from_systemd;
    if (dir != nullptr && *dir != '\0')
      from_systemd = std::filesystem::path{dir} / defaults::kek_credential;
    std::error_code ec;
    if (!from_systemd.empty() && std::filesystem::is_regular_file(from_systemd, ec))
      cfg.security.kek_file = from_systemd;
    else if (r.check_files()) {
      auto text = std::string{"missing: the key-encryption key that protects the state at rest. "
                              "Make one (umask 077; openssl rand -hex 32 > "
                              "/etc/lockbridge/secrets/kek.key) and give its path here, or under "
                              "systemd pass it as the credential "}
                  + defaults::kek_credential + " (LoadCredential=" + defaults::kek_credential
                  + ":/etc/lockbridge/secrets/kek.key)";
      // at the [security] table when there is one: where the line goes
      if (const auto* sec = root.get("security"))
        r.error(sec->source(), "security.key_encryption_key_file", std::move(text));
      else
        r.error("security.key_encryption_key_file", std::move(text));
    }
  }
}

/// [[doors]].
void read_doors(reader& r, const toml::table& root, gateway_config& cfg) {
  if (auto doors = root.get("doors")) {
    if (!doors->is_array_of_tables()) {
      r.error(doors->source(), "doors", "expected [[doors]] tables");
    } else {
      std::set<std::string> seen;
      std::size_t i = 0;
      for (auto& item : *doors->as_array()) {
        auto path = "doors[" + std::to_string(i++) + "]";
        const auto& tbl = *item.as_table();
        r.only_keys(tbl, path, keys_of("doors"));
        door_config door;
        if (auto v = r.id(tbl, path, "id")) {
          door.id = *v;
          if (!seen.insert(*v).second)
            r.error(tbl.get("id")->source(), path + ".id", "duplicate door id \"" + *v + "\"");
        }
        if (auto p = policy_of(r, tbl, path, defaults::offline_policy))
          door.policy = *p;
        cfg.credentials.doors.push_back(std::move(door));
      }
    }
  }

}

/// Each lock's own key: the same file or the same bytes under two locks
/// lets one lock speak as the other. Compared by content, never printed.
struct lock_keys_seen {
  std::map<std::filesystem::path, std::string> files;
  std::map<std::vector<std::uint8_t>, std::string> contents;
};

/// A lock's psk_file: readable, a key of its own.
void read_lock_psk(reader& r, const toml::table& tbl, const std::string& path, bool production,
                   lock_config& lock, lock_keys_seen& seen, std::vector<lock_key>& lock_keys) {
  if (auto v = r.file(tbl, path, "psk_file", true, production)) {
    lock.psk_file = *v;
    auto where = tbl.get("psk_file")->source();
    std::error_code ec;
    auto canonical = std::filesystem::weakly_canonical(*v, ec);
    if (ec)
      canonical = std::filesystem::path{*v}.lexically_normal();
    if (auto [it, fresh] = seen.files.emplace(canonical, lock.id); !fresh)
      r.error(where, path + ".psk_file",
              "the same file as lock " + it->second + "'s psk_file; each lock needs a key "
              "of its own (lockbridge provision lock --id " + lock.id + " makes one)");
    else if (r.check_files()) { // (not when only locating the daemon)
      if (auto psk = read_psk(*v); !psk)
        r.error(where, path + ".psk_file", psk.error().message);
      else if (auto [same, fresh_key] = seen.contents.emplace(*psk, lock.id); !fresh_key)
        r.error(where, path + ".psk_file",
                "holds the same key as lock " + same->second + "'s psk_file; each lock "
                "needs a key of its own (lockbridge provision lock --id " + lock.id
                  + " --force makes one)");
      else
        lock_keys.push_back({where, path + ".psk_file", std::move(*psk)});
    }
  }
}

/// A lock's ble_address: required for a BLE lock, refused for another, unique.
void read_lock_address(reader& r, const toml::table& tbl, const std::string& path,
                       lock_config& lock, std::set<std::string>& seen_addresses) {
  if (auto a = r.text(tbl, path, "ble_address", std::string{})) {
    if (lock.transport == lock_transport::ble) {
      if (a->empty())
        r.error(tbl.source(), path + ".ble_address",
                "missing; a BLE lock needs its address, e.g. ble_address = "
                "\"C0:FF:EE:00:00:01\"");
      else if (auto norm = normalise_ble_address(*a))
        lock.ble_address = *norm;
      else
        r.error(tbl.get("ble_address")->source(), path + ".ble_address",
                "expected six hexadecimal pairs separated by ':' (e.g. "
                "\"C0:FF:EE:00:00:01\"), got \"" + *a + "\"");
      if (!lock.ble_address.empty() && !seen_addresses.insert(lock.ble_address).second)
        r.error(tbl.get("ble_address")->source(), path + ".ble_address",
                "address " + lock.ble_address + " is already used by another lock");
    } else if (!a->empty()) {
      r.error(tbl.get("ble_address")->source(), path + ".ble_address",
              "only a BLE lock has an address; add transport = \"ble\" or remove it");
    }
  }
}

/// [[locks]].
void read_locks(reader& r, const toml::table& root, gateway_config& cfg, bool production,
                std::vector<lock_key>& lock_keys) {
  auto locks = root.get("locks");
  if (locks == nullptr) {
    r.error("locks", "no [[locks]] configured; add one [[locks]] table per lock");
  } else if (!locks->is_array_of_tables()) {
    r.error(locks->source(), "locks", "expected [[locks]] tables");
  } else {
    std::set<std::string> seen;
    std::set<std::string> seen_addresses;
    lock_keys_seen seen_keys;
    std::size_t i = 0;
    for (auto& item : *locks->as_array()) {
      auto path = "locks[" + std::to_string(i++) + "]";
      const auto& tbl = *item.as_table();
      r.only_keys(tbl, path, keys_of("locks"));
      lock_config lock;
      if (auto v = r.id(tbl, path, "id")) {
        lock.id = *v;
        if (!seen.insert(*v).second)
          r.error(tbl.get("id")->source(), path + ".id", "duplicate lock id \"" + *v + "\"");
      }
      read_lock_psk(r, tbl, path, production, lock, seen_keys, lock_keys);
      if (auto t = r.text(tbl, path, "transport", std::string{"coap"})) {
        if (*t == "coap")
          lock.transport = lock_transport::coap;
        else if (*t == "ble")
          lock.transport = lock_transport::ble;
        else
          r.error(tbl.get("transport")->source(), path + ".transport",
                  "expected \"coap\" or \"ble\", got \"" + *t + "\"");
      }
      read_lock_address(r, tbl, path, lock, seen_addresses);
      cfg.locks.push_back(std::move(lock));
    }
  }
}

/// Across sections: CoAP locks need a listener, plain and DTLS listeners
/// their own ports, a BLE lock's visits must come within the silence bound.
void check_listeners(reader& r, const toml::table& root, const gateway_config& cfg) {
  const auto& co = section_of(root, "coap");
  const auto& bl = section_of(root, "ble");
  auto coap_locks = std::count_if(cfg.locks.begin(), cfg.locks.end(), [](const lock_config& l) {
    return l.transport == lock_transport::coap;
  });
  if (coap_locks > 0 && cfg.coap.dtls_listen.empty() && cfg.coap.plain_listen.empty()) {
    auto text = std::to_string(coap_locks) + " lock(s) use CoAP but no address is listened on: "
                "they could never connect. Give an address (the default is "
                "[\"0.0.0.0:5684\"]) or set transport = \"ble\" on those locks";
    if (const auto* node = co.get("dtls_listen"))
      r.error(node->source(), "coap.dtls_listen", text);
    else if (co.source().begin.line > 0) // at the [coap] table that lacks it
      r.error(co.source(), "coap.dtls_listen", text);
    else
      r.error("coap.dtls_listen", text);
  }
  if (const auto* plain = co.get("plain_listen"); plain != nullptr && plain->is_array()) {
    std::size_t k = 0;
    for (const auto& a : cfg.coap.plain_listen) {
      auto twice = std::any_of(cfg.coap.dtls_listen.begin(), cfg.coap.dtls_listen.end(),
                               [&](const listen_address& d) {
                                 return d.host == a.host && d.port == a.port;
                               });
      if (twice)
        r.error(plain->source(), "coap.plain_listen[" + std::to_string(k) + "]",
                "the same address as one in coap.dtls_listen; plain CoAP needs a port of its "
                "own (5683 is plain CoAP's)");
      ++k;
    }
  }
  // A quiet BLE lock is heard from only when visited: its visits must come
  // well within the silence after which a lock is reported unavailable.
  if (std::any_of(cfg.locks.begin(), cfg.locks.end(),
                  [](const lock_config& l) { return l.transport == lock_transport::ble; })
      && cfg.ble.poll_interval_s > 0 && cfg.coap.lock_silence_s > 0
      && std::uint64_t{cfg.ble.poll_interval_s} * 2 > cfg.coap.lock_silence_s) {
    const auto* node = bl.get("poll_interval_s");
    auto text = "a BLE lock is visited every " + std::to_string(cfg.ble.poll_interval_s)
                + " s but reported unavailable after " + std::to_string(cfg.coap.lock_silence_s)
                + " s of silence (coap.lock_silence_s); set poll_interval_s to at most half of it";
    // At the line that sets one of the two, else at the [ble] table.
    const auto* silence = co.get("lock_silence_s");
    if (node != nullptr)
      r.error(node->source(), "ble.poll_interval_s", text);
    else if (silence != nullptr)
      r.error(silence->source(), "ble.poll_interval_s", text);
    else if (bl.source().begin.line > 0)
      r.error(bl.source(), "ble.poll_interval_s", text);
    else
      r.error("ble.poll_interval_s", text);
  }
}

/// The key files' contents: readable, private, and all different.
void check_key_files(reader& r, const toml::table& root, const gateway_config& cfg,
                     const std::vector<lock_key>& lock_keys) {
  if (!r.check_files())
    return;
  // A key file's problem at the line that names the file (none when the
  // path came from systemd's credential).
  auto key_error = [&](const char* section, const char* key, std::string message) {
    auto full = std::string{section} + "." + key;
    const auto* node = root[section][key].node();
    if (node != nullptr)
      r.error(node->source(), full, std::move(message));
    else
      r.error(full, std::move(message));
  };
  std::optional<std::array<std::uint8_t, 32>> kek;
  if (!cfg.security.kek_file.empty()) {
    if (auto key = read_key32(cfg.security.kek_file); !key)
      key_error("security", "key_encryption_key_file", key.error().message);
    else if (world_readable(cfg.security.kek_file))
      key_error("security", "key_encryption_key_file",
                "secret file " + cfg.security.kek_file.string()
                  + " is readable by others; run: chmod o-rwx " + cfg.security.kek_file.string());
    else
      kek = *key;
  }
  if (!cfg.security.previous_kek_file.empty()) {
    if (auto key = read_key32(cfg.security.previous_kek_file); !key)
      key_error("security", "previous_key_encryption_key_file", key.error().message);
    else if (kek && *key == *kek)
      key_error("security", "previous_key_encryption_key_file",
                "holds the same key as security.key_encryption_key_file; give the key it "
                "replaced, or remove this line");
  }
  if (!cfg.credentials.lookup_key_file.empty()) {
    if (auto key = read_key32(cfg.credentials.lookup_key_file); !key)
      key_error("credentials", "lookup_key_file", key.error().message);
    else if (kek && *key == *kek)
      key_error("credentials", "lookup_key_file",
                "holds the same key as the key-encryption key; the two must differ "
                "(make one with: openssl rand -hex 32)");
    else
      check_lock_keys_against(r, lock_keys, cfg.credentials.lookup_key_file, *key,
                              "credentials.lookup_key_file");
  }
  if (kek)
    check_lock_keys_against(r, lock_keys, cfg.security.kek_file, *kek,
                            "security.key_encryption_key_file");
}

void read_document(reader& r, const toml::table& root, gateway_config& cfg) {
  std::vector<lock_key> lock_keys;
  r.only_keys(root, "", sections());
  bool production = read_gateway(r, root, cfg);
  read_store(r, root, cfg, production);
  read_coap(r, root, cfg, production);
  read_metrics(r, root, cfg);
  read_ble(r, root, cfg);
  read_mqtt(r, root, cfg, production);
  read_credentials(r, root, cfg, production);
  read_security(r, root, cfg);
  read_doors(r, root, cfg);
  read_locks(r, root, cfg, production, lock_keys);
  check_listeners(r, root, cfg);
  check_key_files(r, root, cfg, lock_keys);
}

} // namespace

std::vector<override_value> overrides_from_environment(char** environment) {
  std::vector<override_value> out;
  static constexpr std::string_view prefix = "LOCKBRIDGE_";
  for (auto e = environment; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry{*e};
    auto eq = entry.find('=');
    if (!entry.starts_with(prefix) || eq == std::string_view::npos)
      continue;
    auto name = entry.substr(0, eq);
    auto rest = name.substr(prefix.size());
    auto sep = rest.find("__");
    if (sep == std::string_view::npos || sep == 0 || sep + 2 >= rest.size())
      continue;
    std::string key;
    for (char c : rest.substr(0, sep))
      key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    key += '.';
    for (char c : rest.substr(sep + 2))
      key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.push_back({std::move(key), std::string{entry.substr(eq + 1)},
                   "environment " + std::string{name}});
  }
  return out;
}

namespace {

/// Limits checked before toml++ sees a text. Its parser recurses once per
/// level of a dotted key (a header dotted tens of thousands of levels deep
/// overflows the stack), and toml++ 3.3.0 reaches undefined behaviour on some
/// non-ASCII characters (its whitespace test has an unreachable branch that
/// characters such as U+00E9 reach when they stand where whitespace may).
constexpr std::size_t max_config_bytes = std::size_t{8} << 20;
constexpr std::size_t max_dots_per_line = 32;

/// The same document in ASCII, for toml++: every non-ASCII character inside
/// a string becomes its \u or \U escape (a literal string becomes the basic
/// string of the same value), inside a comment a '?'; outside both it is an
/// error (TOML allows none there). Keys may be dotted at most 32 deep (more
/// than 32 dots on a line outside strings is refused). Lines and their
/// numbers are kept, so toml++'s positions stay right (columns may shift
/// on a line with an escaped character). Returns the first problem instead.
std::optional<config_error> to_ascii_toml(std::string_view text, const std::string& source,
                                          std::string& out) {
  auto fail = [&](std::size_t line, std::size_t column, std::string message) {
    return config_error{source, static_cast<std::uint32_t>(line),
                        static_cast<std::uint32_t>(column), "",
                        "TOML not accepted: " + std::move(message)};
  };
  if (text.size() > max_config_bytes)
    return fail(0, 0, "the file has " + std::to_string(text.size())
                        + " bytes; a config may have at most "
                        + std::to_string(max_config_bytes >> 20) + " MiB");
  {
    std::size_t line = 1, start = 0;
    for (;;) {
      auto end = text.find('\n', start);
      auto piece = text.substr(start, end == std::string_view::npos ? end : end - start);
      if (!protocol::cbor::is_valid_utf8(piece))
        return fail(line, 1, "this line is not valid UTF-8; save the file as UTF-8");
      if (end == std::string_view::npos)
        break;
      start = end + 1;
      ++line;
    }
  }
  out.clear();
  out.reserve(text.size() + text.size() / 8);
  enum class in { code, comment, basic, literal, multiline_basic, multiline_literal };
  auto state = in::code;
  std::size_t line = 1, column = 0, dots = 0;
  auto run_of = [&](std::size_t i, char quote) {
    std::size_t n = 0;
    while (i + n < text.size() && text[i + n] == quote)
      ++n;
    return n;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    auto byte = static_cast<unsigned char>(c);
    if (c == '\n') {
      ++line;
      column = 0;
      dots = 0;
      if (state == in::comment || state == in::basic || state == in::literal)
        state = in::code; // an unterminated one-line string is toml++'s to report
      out += c;
      continue;
    }
    ++column;
    if (byte >= 0x80) {
      // One whole character (the text is valid UTF-8).
      std::size_t length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : 2;
      std::uint32_t cp = byte & (length == 4 ? 0x07 : length == 3 ? 0x0f : 0x1f);
      for (std::size_t k = 1; k < length; ++k)
        cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3f);
      i += length - 1;
      if (state == in::code)
        return fail(line, column, "a non-ASCII character outside a quoted string or comment; "
                                  "quote the key or the value (\"\xc3\xa9\" = 1, key = \"\xc3\xa9\")");
      if (state == in::comment) {
        out += '?';
      } else {
        char escaped[12];
        std::snprintf(escaped, sizeof escaped, cp <= 0xffff ? "\\u%04X" : "\\U%08X", cp);
        out += escaped;
      }
      continue;
    }
    switch (state) {
    case in::code:
      if (c == '#') {
        state = in::comment;
      } else if (c == '"' || c == '\'') {
        bool multiline = run_of(i, c) >= 3;
        state = c == '"' ? (multiline ? in::multiline_basic : in::basic)
                         : (multiline ? in::multiline_literal : in::literal);
        out += multiline ? "\"\"\"" : "\"";
        if (multiline) {
          i += 2;
          column += 2;
        }
        continue;
      } else if (c == '.' && ++dots > max_dots_per_line) {
        return fail(line, column, "more than " + std::to_string(max_dots_per_line)
                                    + " '.' on one line outside strings; keys may be dotted at "
                                      "most " + std::to_string(max_dots_per_line) + " levels deep");
      }
      out += c;
      break;
    case in::comment:
      out += c;
      break;
    case in::basic:
    case in::multiline_basic:
      if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') {
        if (static_cast<unsigned char>(text[i + 1]) >= 0x80)
          return fail(line, column + 1, "a backslash before a non-ASCII character is not an "
                                        "escape; write \\\\ for a backslash");
        out += c;
        out += text[i + 1]; // the escaped character, never a closing quote
        ++i;
        ++column;
      } else if (c == '"' && state == in::basic) {
        out += c;
        state = in::code;
      } else if (c == '"') {
        // Up to two quotes before the closing three belong to the string;
        // the same characters close it in the ASCII text.
        auto n = run_of(i, '"');
        out.append(n, '"');
        i += n - 1;
        column += n - 1;
        if (n >= 3)
          state = in::code;
      } else {
        out += c;
      }
      break;
    case in::literal:
    case in::multiline_literal:
      if (c == '\'' && state == in::literal) {
        out += '"';
        state = in::code;
      } else if (c == '\'') {
        auto n = run_of(i, '\'');
        if (n > 5)
          return fail(line, column, "more than five ' in a row inside a multi-line literal "
                                    "string");
        if (n >= 3) {
          out.append(n - 3, '\''); // part of the value
          out += "\"\"\"";
          state = in::code;
        } else {
          out.append(n, '\'');
        }
        i += n - 1;
        column += n - 1;
      } else if (c == '\\' || c == '"') {
        out += '\\'; // literal in the original, escaped in the basic string it becomes
        out += c;
      } else {
        out += c;
      }
      break;
    }
  }
  return std::nullopt;
}

/// toml::parse of the ASCII form; nullopt once `error` says why not.
/// What to do about the syntax errors installers make most, in toml++'s
/// words: a second [locks] where each lock is a [[locks]] table, and a raw
/// line break or control character inside a quoted string.
std::string toml_hint(std::string_view description) {
  if (description.find("cannot redefine existing") != std::string_view::npos)
    return " (each lock is a [[locks]] table, with double brackets, as is each [[doors]] "
           "entry; a table in single brackets may appear only once)";
  if (description.find("control character") != std::string_view::npos)
    return " (a \"quoted\" string may not hold a raw line break or other control "
           "character: write \\n, or use a '''multi-line''' string)";
  return {};
}

std::optional<toml::table> parse_toml(std::string_view text, const std::string& source,
                                      config_error& error) {
  std::string ascii;
  if (auto refused = to_ascii_toml(text, source, ascii)) {
    error = std::move(*refused);
    return std::nullopt;
  }
  try {
    return toml::parse(ascii, source);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source();
    error = config_error{where.path ? *where.path : source,
                         static_cast<std::uint32_t>(where.begin.line),
                         static_cast<std::uint32_t>(where.begin.column), "",
                         "TOML syntax error: " + std::string{e.description()}
                           + toml_hint(e.description())};
  } catch (const std::exception& e) {
    error = config_error{source, 0, 0, "", std::string{"cannot parse: "} + e.what()};
  }
  return std::nullopt;
}

/// Puts each override into the parsed document, where validation then treats
/// it like any key of the file (its errors name the override's origin).
void apply_overrides(reader& r, toml::table& root, const std::vector<override_value>& overrides) {
  for (const auto& o : overrides) {
    auto dot = o.key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == o.key.size()
        || o.key.find('.', dot + 1) != std::string::npos) {
      r.error(o.key, "(" + o.origin + ") expected section.key, e.g. store.retention_days");
      continue;
    }
    auto section = o.key.substr(0, dot);
    auto key = o.key.substr(dot + 1);
    if (section == "locks" || section == "doors") {
      r.error(o.key, "(" + o.origin + ") [[" + section + "]] entries are set in the file only");
      continue;
    }
    config_error problem;
    auto parsed = parse_toml("v = " + o.value, o.origin, problem);
    if (!parsed) {
      // Not a TOML value: the text itself, as a string.
      std::string quoted = "\"";
      for (char c : o.value) {
        if (c == '"' || c == '\\')
          quoted += '\\';
        if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f)
          quoted += c;
      }
      quoted += '"';
      parsed = parse_toml("v = " + quoted, o.origin, problem);
      if (!parsed) {
        r.error(o.key, "(" + o.origin + ") not a usable value: " + problem.message);
        continue;
      }
    }
    auto* node = root.get(section);
    if (node == nullptr) {
      root.insert(section, toml::table{});
      node = root.get(section);
    }
    if (!node->is_table()) {
      r.error(o.key, "(" + o.origin + ") " + section + " is not a table in the file");
      continue;
    }
    node->as_table()->insert_or_assign(key, std::move(*parsed->get("v")));
  }
}

} // namespace

namespace {

/// What the document sets, key by key, as TOML text (for a reload to compare).
void record_values(const toml::table& root, gateway_config& cfg) {
  auto text = [](const toml::node& node) {
    std::ostringstream out;
    node.visit([&](const auto& n) { out << n; });
    return out.str();
  };
  for (auto&& [section, node] : root) {
    if (const auto* tbl = node.as_table()) {
      for (auto&& [key, value] : *tbl)
        cfg.values[std::string{section.str()} + "." + std::string{key.str()}] = text(value);
    } else {
      cfg.values[std::string{section.str()}] = text(node);
    }
  }
}

} // namespace

load_result load_from_string(const std::string& text, const std::string& source_name,
                             const std::filesystem::path& base_dir,
                             const std::vector<override_value>& overrides, load_purpose purpose) {
  load_result out;
  reader r{source_name, base_dir, purpose != load_purpose::locate,
           purpose == load_purpose::check};
  config_error problem;
  auto parsed = parse_toml(text, source_name, problem);
  if (!parsed) {
    out.errors.push_back(std::move(problem));
    return out;
  }
  auto& root = *parsed;
  apply_overrides(r, root, overrides);
  gateway_config cfg;
  cfg.source = source_name;
  read_document(r, root, cfg);
  record_values(root, cfg);
  out.errors = std::move(r.errors());
  out.warnings = std::move(r.warnings());
  if (out.errors.empty())
    out.config = std::move(cfg);
  return out;
}

load_result load(const std::filesystem::path& file, const std::vector<override_value>& overrides,
                 load_purpose purpose) {
  std::ifstream in{file, std::ios::binary};
  if (!in) {
    load_result out;
    out.errors.push_back(config_error{file.string(), 0, 0, "",
                                      "cannot read the config file (missing or not readable)"});
    return out;
  }
  std::stringstream text;
  text << in.rdbuf();
  auto base = std::filesystem::absolute(file).parent_path();
  return load_from_string(text.str(), file.string(), base, overrides, purpose);
}

} // namespace lockbridge::config
