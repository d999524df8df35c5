#include "doctor.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>
#include <systemd/sd-bus.h>

#include "actors/supervisor.hpp"
#include "status_socket.hpp"
#include "config/defaults.hpp"
#include "config/tls_check.hpp"
#include "protocols/human.hpp"
#include "protocols/log_fields.hpp"
#include "transports/port_probe.hpp"
#include "transports/tls_probe.hpp"

namespace lockbridge::doctor {

namespace {

namespace fs = std::filesystem;

/// Where the shipped unit's LoadCredential= takes the key-encryption key from.
constexpr const char* kek_credential_source = "/etc/lockbridge/secrets/kek.key";
constexpr std::uint64_t min_free_bytes = 64ull << 20;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

class report {
public:
  void ok(std::string check, std::string message) {
    add(level::ok, std::move(check), std::move(message), {});
  }
  void warning(std::string check, std::string message, std::string fix) {
    add(level::warning, std::move(check), std::move(message), std::move(fix));
  }
  void error(std::string check, std::string message, std::string fix) {
    add(level::error, std::move(check), std::move(message), std::move(fix));
  }
  [[nodiscard]] const std::vector<finding>& findings() const { return findings_; }

private:
  void add(level l, std::string check, std::string message, std::string fix) {
    findings_.push_back({l, std::move(check), protocol::printable_text(message),
                         protocol::printable_text(fix)});
  }
  std::vector<finding> findings_;
};

// ---- files as the service user sees them ----------------------------------

struct access_need {
  std::string key;  ///< the config key that names it
  fs::path path;
  bool directory = false; ///< needs write + search (state, socket directory)
  bool secret = false;
};

struct service_user {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

std::string owner_and_mode(const fs::path& p) {
  struct stat st{};
  if (::stat(p.c_str(), &st) != 0)
    return "missing";
  auto* pw = ::getpwuid(st.st_uid);
  auto* gr = ::getgrgid(st.st_gid);
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
  return "owner " + (pw != nullptr ? std::string{pw->pw_name} : std::to_string(st.st_uid)) + ":"
         + (gr != nullptr ? std::string{gr->gr_name} : std::to_string(st.st_gid)) + ", mode "
         + mode;
}

/// errno of each need, tried by a child that became `user` (its groups too):
/// what the service will meet, ACLs and all, not a guess from the modes.
std::vector<int> try_as(const service_user& user, const std::vector<access_need>& needs) {
  int pipe_fd[2];
  if (::pipe2(pipe_fd, O_CLOEXEC) != 0)
    return std::vector<int>(needs.size(), errno);
  auto pid = ::fork();
  if (pid < 0)
    return std::vector<int>(needs.size(), errno);
  if (pid == 0) {
    ::close(pipe_fd[0]);
    bool became = ::geteuid() != 0
                  || (::initgroups(user.name.c_str(), user.gid) == 0 && ::setgid(user.gid) == 0
                      && ::setuid(user.uid) == 0);
    for (const auto& n : needs) {
      int err = 0;
      if (!became) {
        err = EPERM;
      } else if (n.directory) {
        err = ::access(n.path.c_str(), W_OK | X_OK) == 0 ? 0 : errno;
      } else {
        int fd = ::open(n.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ELOOP) // a symlink: follow it as the daemon does
          fd = ::open(n.path.c_str(), O_RDONLY | O_CLOEXEC);
        err = fd >= 0 ? 0 : errno;
        if (fd >= 0)
          ::close(fd);
      }
      [[maybe_unused]] auto w = ::write(pipe_fd[1], &err, sizeof err);
    }
    ::_exit(0);
  }
  ::close(pipe_fd[1]);
  std::vector<int> out;
  int err = 0;
  while (out.size() < needs.size() && ::read(pipe_fd[0], &err, sizeof err) == sizeof err)
    out.push_back(err);
  ::close(pipe_fd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  out.resize(needs.size(), EIO);
  return out;
}

void check_files(report& r, const config::gateway_config& cfg, const std::string& file,
                 const service_user& user, bool kek_by_systemd) {
  std::vector<access_need> needs{{"config file", file, false, false}};
  for (std::size_t i = 0; i < cfg.locks.size(); ++i)
    needs.push_back({"locks[" + std::to_string(i) + "].psk_file", cfg.locks[i].psk_file, false,
                     true});
  needs.push_back({"credentials.lookup_key_file", cfg.credentials.lookup_key_file, false, true});
  if (!kek_by_systemd && !cfg.security.kek_file.empty())
    needs.push_back({"security.key_encryption_key_file", cfg.security.kek_file, false, true});
  if (!cfg.security.previous_kek_file.empty())
    needs.push_back(
      {"security.previous_key_encryption_key_file", cfg.security.previous_kek_file, false, true});
  needs.push_back({"mqtt.ca_file", cfg.mqtt.ca_file, false, false});
  needs.push_back({"mqtt.cert_file", cfg.mqtt.cert_file, false, false});
  needs.push_back({"mqtt.key_file", cfg.mqtt.key_file, false, true});
  // Directories the daemon writes in. systemd makes the default ones
  // (StateDirectory=, RuntimeDirectory=) for the service user at start.
  std::error_code ec;
  if (fs::exists(cfg.store.state_dir, ec))
    needs.push_back({"store.state_dir", cfg.store.state_dir, true, false});
  else if (cfg.store.state_dir != defaults::state_dir)
    needs.push_back({"store.state_dir (to be made in)", cfg.store.state_dir.parent_path(), true,
                     false});
  auto socket_dir = cfg.status_socket.parent_path();
  if (fs::exists(socket_dir, ec))
    needs.push_back({"gateway.status_socket's directory", socket_dir, true, false});

  auto* gr = ::getgrgid(user.gid);
  auto group = gr != nullptr ? std::string{gr->gr_name} : std::to_string(user.gid);
  auto results = try_as(user, needs);
  std::size_t fine = 0;
  for (std::size_t i = 0; i < needs.size(); ++i) {
    const auto& n = needs[i];
    auto err = results[i];
    if (err == 0) {
      ++fine;
      // Readable by the service, and by everybody else too?
      struct stat st{};
      if (n.secret && ::stat(n.path.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0)
        r.error("files",
                n.key + " " + n.path.string() + " is readable by every user (" +
                  owner_and_mode(n.path) + ")",
                "chmod o-rwx " + n.path.string());
      continue;
    }
    auto what = n.directory ? "cannot create files in it" : "cannot read it";
    std::string fix;
    if (err == ENOENT)
      fix = "create it, or correct " + n.key;
    else if (n.directory)
      fix = "chown " + user.name + " " + n.path.string() + " (the service writes there)";
    else
      fix = "chgrp " + group + " " + n.path.string() + " && chmod 0640 " + n.path.string()
            + " (and let the group search its directories: chmod g+x)";
    r.error("files",
            n.key + " " + n.path.string() + ": the service user " + user.name + " " + what + " ("
              + std::strerror(err) + "; " + owner_and_mode(n.path) + ")",
            fix);
  }
  if (fine == needs.size())
    r.ok("files", std::to_string(needs.size()) + " files and directories as the service user "
                    + user.name + " sees them: readable (secrets not by others), writable where "
                                  "it writes");
}

// ---- ports ------------------------------------------------------------------

void check_port(report& r, const std::string& key, const config::listen_address& a, int type,
                bool daemon_running) {
  auto where = a.host + ":" + std::to_string(a.port);
  auto proto = type == SOCK_DGRAM ? "UDP" : "TCP";
  int err = transport::try_bind(a, type);
  if (err == 0) {
    r.ok("ports", key + " " + where + ": " + proto + " port free");
    return;
  }
  if (err == EADDRINUSE) {
    auto holder = transport::port_holder(a.port, type);
    if (holder && holder->starts_with("lockbridge ") && daemon_running) {
      r.ok("ports", key + " " + where + ": held by the running daemon, " + *holder);
      return;
    }
    r.error("ports",
            key + " " + where + ": the " + proto + " port is held by "
              + (holder ? *holder : std::string{"another process"}),
            std::string{"stop it, or choose another port (ss -"} + (type == SOCK_DGRAM ? "u" : "t")
              + "lpn 'sport = :" + std::to_string(a.port) + "' shows the process)");
    return;
  }
  r.error("ports", key + " " + where + ": cannot listen there (" + std::strerror(err) + ")",
          "use an address of this machine (ip -brief address)");
}

// ---- the broker and the TLS files -----------------------------------------

void check_broker(report& r, const config::gateway_config& cfg) {
  // Each broker of mqtt.brokers: one that does not answer is a warning
  // while another does (the gateway fails over), an error when none does.
  std::vector<std::pair<std::string, std::string>> problems;
  for (const auto& uri : cfg.mqtt.brokers)
    problems.emplace_back(uri, transport::probe_tls(uri, cfg.mqtt.ca_file, cfg.mqtt.cert_file,
                                                    cfg.mqtt.key_file, 3000));
  bool any = std::any_of(problems.begin(), problems.end(),
                         [](const auto& p) { return p.second.empty(); });
  for (const auto& [uri, problem] : problems) {
    if (problem.empty()) {
      r.ok("broker", uri + ": mutual TLS handshake succeeded (chain, name and dates of the "
                           "broker's certificate; ours accepted)");
      continue;
    }
    auto fix = std::string{"see docs/operations.md, \"When things fail\"; the locks are served "
                           "without the cloud meanwhile"};
    if (any)
      r.warning("broker", uri + ": " + problem + " (the gateway uses another of mqtt.brokers)",
                fix);
    else
      r.error("broker", uri + ": " + problem, fix);
  }
  auto now = now_ms();
  for (const auto& [key, file] :
       {std::pair{"mqtt.cert_file", cfg.mqtt.cert_file}, std::pair{"mqtt.ca_file", cfg.mqtt.ca_file}}) {
    auto end = config::certificate_not_after(file);
    if (!end)
      continue; // check-config has said why
    auto end_ms = *end * 1000;
    auto days = (end_ms - now) / 86'400'000;
    auto text = std::string{key} + " " + file.string() + " expires " + human::expiry(end_ms, now);
    if (end_ms <= now)
      r.error("tls", text, "have a new certificate issued (docs/operations.md, \"Rotate the "
                           "gateway's certificate\")");
    else if (days < static_cast<std::int64_t>(cfg.mqtt.cert_warning_days))
      r.warning("tls", text, "renew it before then (docs/operations.md, \"Rotate the gateway's "
                             "certificate\")");
    else
      r.ok("tls", text);
  }
}

// ---- the clock ----------------------------------------------------------------

void check_clock(report& r, const config::gateway_config& cfg,
                 const std::optional<nlohmann::json>& status) {
  auto fix = std::string{"set the time (timedatectl; check NTP and the real-time clock): "
                         "access decisions and schedules use the saved time until it catches up"};
  if (status) {
    auto behind = (*status)["credentials"].value("clock_behind_ms", std::int64_t{0});
    if (behind > 2000)
      r.error("clock", "the system clock is " + human::duration(behind / 1000)
                         + " behind the latest time this gateway saved (running daemon)",
              fix);
    else
      r.ok("clock", "the system clock is not behind the latest time the gateway saved");
    return;
  }
  std::error_code ec;
  if (!fs::exists(cfg.store.state_dir / "data.mdb", ec)) {
    r.ok("clock", "no state yet: nothing to compare the clock with");
    return;
  }
  try {
    auto vault = open_state(cfg, false);
    auto saved = vault->credentials->figures().time_high_water;
    auto now = now_ms();
    if (saved > now + 2000)
      r.error("clock",
              "the system clock is " + human::duration((saved - now) / 1000)
                + " behind the latest time this gateway saved (" + human::date(saved) + ")",
              fix);
    else
      r.ok("clock", "the system clock is not behind the latest time the gateway saved"
                      + (saved > 0 ? " (" + human::date(saved) + ")" : std::string{}));
  } catch (const std::exception& e) {
    r.warning("clock", std::string{"cannot read the saved time from the state: "} + e.what(),
              "run doctor as root (the state needs the key-encryption key), or while the "
              "daemon runs");
  }
}

// ---- BlueZ ----------------------------------------------------------------------

void check_ble(report& r, const config::gateway_config& cfg) {
  auto ble = std::count_if(cfg.locks.begin(), cfg.locks.end(), [](const auto& l) {
    return l.transport == config::lock_transport::ble;
  });
  if (ble == 0)
    return;
  sd_bus* bus = nullptr;
  if (int rc = sd_bus_open_system(&bus); rc < 0) {
    r.error("ble", std::to_string(ble) + " BLE locks, but no D-Bus system bus (" +
                     std::strerror(-rc) + ")",
            "apt-get install dbus bluez; systemctl start dbus bluetooth");
    return;
  }
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  auto path = "/org/bluez/" + cfg.ble.adapter;
  int rc = sd_bus_get_property(bus, "org.bluez", path.c_str(), "org.bluez.Adapter1", "Powered",
                               &err, &reply, "b");
  if (rc < 0) {
    bool no_bluez = sd_bus_error_has_name(&err, "org.freedesktop.DBus.Error.ServiceUnknown")
                    || sd_bus_error_has_name(&err, "org.freedesktop.DBus.Error.NameHasNoOwner");
    if (no_bluez)
      r.error("ble", std::to_string(ble) + " BLE locks, but BlueZ is not on the system bus",
              "apt-get install bluez; systemctl enable --now bluetooth");
    else
      r.error("ble",
              "BlueZ has no adapter " + cfg.ble.adapter + " (" +
                (err.message != nullptr ? std::string{err.message} : std::strerror(-rc)) + ")",
              "bluetoothctl list shows the adapters; set [ble] adapter");
  } else {
    int powered = 0;
    sd_bus_message_read(reply, "b", &powered);
    if (powered != 0)
      r.ok("ble", "BlueZ adapter " + cfg.ble.adapter + " present and powered for "
                    + std::to_string(ble) + " BLE locks");
    else
      r.warning("ble", "BlueZ adapter " + cfg.ble.adapter + " is powered off",
                "bluetoothctl power on (and check rfkill list)");
  }
  sd_bus_message_unref(reply);
  sd_bus_error_free(&err);
  sd_bus_unref(bus);
}

// ---- disk ------------------------------------------------------------------------

void check_disk(report& r, const config::gateway_config& cfg) {
  auto dir = cfg.store.state_dir;
  std::error_code ec;
  while (!dir.empty() && !fs::exists(dir, ec) && dir != dir.parent_path())
    dir = dir.parent_path();
  struct statvfs vfs{};
  if (::statvfs(dir.c_str(), &vfs) != 0) {
    r.warning("disk", "cannot read the free space under " + dir.string(), "check the mount");
    return;
  }
  auto free = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  std::uint64_t used = 0;
  auto data = cfg.store.state_dir / "data.mdb";
  if (fs::exists(data, ec)) {
    struct stat st{};
    if (::stat(data.c_str(), &st) == 0)
      used = static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  auto bound = cfg.store.journal_max_bytes;
  auto text = human::bytes(free) + " free under " + dir.string() + "; store.journal_max_mb "
              + human::bytes(bound) + ", the state takes " + human::bytes(used) + " now";
  if (free < min_free_bytes)
    r.error("disk", text, "free space on that file system: the state's commits fail below it");
  else if (free + used < bound)
    r.warning("disk", text + ": an outage long enough fills the disk before the journal's bound",
              "free space, or lower store.journal_max_mb to what the disk holds");
  else
    r.ok("disk", text);
}

std::string_view name_of(level l) {
  switch (l) {
  case level::ok: return "OK";
  case level::warning: return "WARNING";
  case level::error: return "ERROR";
  }
  return "?";
}

} // namespace

int run(const options& opts, const std::vector<config::override_value>& given) {
  report r;
  auto overrides = given;
  // Under the shipped unit systemd reads the key-encryption key as root and
  // hands it over (LoadCredential=); outside it, doctor looks where the
  // unit takes it from.
  bool kek_by_systemd = false;
  {
    auto probe = config::load(opts.config_file, overrides, config::load_purpose::locate);
    std::error_code ec;
    const char* creds = std::getenv("CREDENTIALS_DIRECTORY");
    if (probe.config && !probe.config->values.contains("security.key_encryption_key_file")
        && (creds == nullptr || *creds == '\0') && fs::exists(kek_credential_source, ec)) {
      overrides.push_back({"security.key_encryption_key_file",
                           std::string{"\""} + kek_credential_source + "\"",
                           "the unit's LoadCredential=" + std::string{defaults::kek_credential}});
      kek_by_systemd = true;
    }
  }
  auto loaded = config::load(opts.config_file, overrides, config::load_purpose::check);
  for (const auto& e : loaded.errors)
    r.error("config", e.to_string(), "lockbridge check-config shows the same; fix the file");
  for (const auto& w : loaded.warnings)
    r.warning("config", w.to_string(), "see the message");
  std::optional<nlohmann::json> status;
  if (loaded.config) {
    const auto& cfg = *loaded.config;
    r.ok("config", opts.config_file + ": valid (site " + cfg.site + ", gateway " + cfg.gateway
                     + ", " + std::to_string(cfg.locks.size()) + " locks)");
    if (kek_by_systemd)
      r.ok("config", std::string{"key-encryption key: "} + kek_credential_source
                       + ", handed to the service by systemd (LoadCredential=)");

    // Whose view of the files: the service user's when run as root.
    service_user user;
    if (::geteuid() == 0) {
      user.name = opts.user.empty() ? "lockbridge" : opts.user;
      if (auto* pw = ::getpwnam(user.name.c_str())) {
        user.uid = pw->pw_uid;
        user.gid = pw->pw_gid;
        check_files(r, cfg, opts.config_file, user, kek_by_systemd);
      } else {
        r.error("files", "no user " + user.name + " on this machine",
                "install the package (it makes the lockbridge user), or name the service's "
                "user with --user");
      }
    } else {
      auto* pw = ::getpwuid(::geteuid());
      user.name = pw != nullptr ? pw->pw_name : std::to_string(::geteuid());
      user.uid = ::geteuid();
      user.gid = ::getegid();
      if (!opts.user.empty() && opts.user != user.name)
        r.warning("files", "files are checked as " + user.name + ", not " + opts.user,
                  "run doctor as root to check them as another user");
      check_files(r, cfg, opts.config_file, user, kek_by_systemd);
    }

    auto reply = query_status(cfg.status_socket, 5);
    if (reply.ok) {
      auto doc = nlohmann::json::parse(reply.text, nullptr, false);
      if (doc.is_object() && !doc.contains("error"))
        status = std::move(doc);
    }
    if (status)
      r.ok("daemon", "a lockbridge daemon answers on " + cfg.status_socket.string() + " (up "
                       + human::duration((status->value("ts", std::int64_t{0})
                                          - status->value("started_at", std::int64_t{0}))
                                         / 1000)
                       + ")");
    else
      r.ok("daemon", reply.not_running
                       ? "not running (nothing answers on " + cfg.status_socket.string() + ")"
                       : "no answer on " + cfg.status_socket.string() + ": " + reply.text);

    for (std::size_t i = 0; i < cfg.coap.dtls_listen.size(); ++i)
      check_port(r, "coap.dtls_listen[" + std::to_string(i) + "]", cfg.coap.dtls_listen[i],
                 SOCK_DGRAM, status.has_value());
    for (std::size_t i = 0; i < cfg.coap.plain_listen.size(); ++i)
      check_port(r, "coap.plain_listen[" + std::to_string(i) + "]", cfg.coap.plain_listen[i],
                 SOCK_DGRAM, status.has_value());
    if (cfg.metrics_listen)
      check_port(r, "metrics.listen", *cfg.metrics_listen, SOCK_STREAM, status.has_value());
    check_broker(r, cfg);
    check_clock(r, cfg, status);
    check_ble(r, cfg);
    check_disk(r, cfg);
  }

  auto worst = level::ok;
  for (const auto& f : r.findings())
    worst = std::max(worst, f.severity);
  if (opts.json) {
    auto list = nlohmann::json::array();
    for (const auto& f : r.findings()) {
      nlohmann::json item{{"level", std::string{name_of(f.severity)}},
                          {"check", f.check},
                          {"message", f.message}};
      if (!f.fix.empty())
        item["fix"] = f.fix;
      list.push_back(std::move(item));
    }
    std::cout << nlohmann::json{{"worst", std::string{name_of(worst)}}, {"findings", list}}.dump()
              << "\n";
  } else {
    for (const auto& f : r.findings()) {
      std::cout << name_of(f.severity) << std::string(8 - name_of(f.severity).size(), ' ')
                << f.check << ": " << f.message << "\n";
      if (!f.fix.empty())
        std::cout << "        fix: " << f.fix << "\n";
    }
    auto count = [&](level l) {
      return std::count_if(r.findings().begin(), r.findings().end(),
                           [l](const auto& f) { return f.severity == l; });
    };
    std::cout << "\n" << count(level::error) << " error(s), " << count(level::warning)
              << " warning(s), " << count(level::ok) << " OK\n";
  }
  return worst == level::error ? 2 : worst == level::warning ? 1 : 0;
}

} // namespace lockbridge::doctor
