// lockbridge: the on-site gateway between electronic door locks and the cloud.
// Start in plain stages: config, logs, store and listeners (supervisor),
// signals, sd_notify READY, wait; then an ordered teardown.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <grp.h>
#include <malloc.h>
#include <openssl/rand.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <caf/all.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <sys/uio.h>

#include "actors/failure.hpp"
#include "actors/supervisor.hpp"
#include "config/config.hpp"
#include "config/defaults.hpp"
#include "config/secrets.hpp"
#include "protocols/clock_guard.hpp"
#include "protocols/cloud_messages.hpp"
#include "protocols/human.hpp"
#include "transports/port_probe.hpp"
#include "protocols/log_fields.hpp"
#include "store/credentials.hpp"
#include "store/journal.hpp"
#include "store/state_check.hpp"
#include "doctor.hpp"
#include "local_control.hpp"
#include "metrics_endpoint.hpp"
#include "views.hpp"
#include "status_socket.hpp"
#include "protocols/json_input.hpp"

namespace {

/// Exit codes (docs/operations.md): sysexits.h values where one fits.
constexpr int exit_ok = 0;
constexpr int exit_failure = 1;
constexpr int exit_not_running = 3; // LSB: program is not running (`status`)
constexpr int exit_broken = 2;     // `audit verify`: the chain is broken
constexpr int exit_usage = 64;  // EX_USAGE
constexpr int exit_state = 65;  // EX_DATAERR: the state is damaged or not this gateway's
constexpr int exit_environment = 69; // EX_UNAVAILABLE: a port or the state held elsewhere
constexpr int exit_config = 78; // EX_CONFIG

#ifndef LOCKBRIDGE_VERSION
#define LOCKBRIDGE_VERSION "0.0.0"
#endif

/// Sends each line to journald with structured fields: PRIORITY,
/// SYSLOG_IDENTIFIER, LOCKBRIDGE_COMPONENT and LOCKBRIDGE_LOCK (taken from the
/// line's wording; see protocols/log_fields.hpp).
class journald_sink final : public spdlog::sinks::base_sink<std::mutex> {
protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::string_view text{msg.payload.data(), msg.payload.size()};
    auto fields = lockbridge::protocol::fields_of(text);
    int priority = 6;
    switch (msg.level) {
    case spdlog::level::trace:
    case spdlog::level::debug: priority = 7; break;
    case spdlog::level::info: priority = 6; break;
    case spdlog::level::warn: priority = 4; break;
    case spdlog::level::err: priority = 3; break;
    case spdlog::level::critical: priority = 2; break;
    default: break;
    }
    std::string message = "MESSAGE=" + lockbridge::protocol::printable_text(text);
    std::string prio = "PRIORITY=" + std::to_string(priority);
    std::string ident = "SYSLOG_IDENTIFIER=lockbridge";
    std::string component = "LOCKBRIDGE_COMPONENT=" + fields.component;
    std::string lock = "LOCKBRIDGE_LOCK=" + fields.lock;
    iovec iov[5];
    int n = 0;
    for (auto* f : {&message, &prio, &ident})
      iov[n++] = {f->data(), f->size()};
    if (!fields.component.empty())
      iov[n++] = {component.data(), component.size()};
    if (!fields.lock.empty())
      iov[n++] = {lock.data(), lock.size()};
    sd_journal_sendv(iov, n);
  }
  void flush_() override {}
};

/// stderr, one line per message: control characters inside a message (a
/// newline in a value a line quotes, an escape sequence) are escaped, so no
/// value from outside (config, locks, cloud) can start a line of its own or
/// move the terminal, whichever code path logs it.
class escaping_stderr_sink final : public spdlog::sinks::base_sink<std::mutex> {
protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    std::string_view text{formatted.data(), formatted.size()};
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
      text.remove_suffix(1);
    auto line = lockbridge::protocol::printable_text(text);
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

/// True if stderr is connected to journald (systemd sets JOURNAL_STREAM).
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr)
    return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2)
    return false;
  struct stat st {};
  return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

void setup_logging(const std::string& level) {
  if (stderr_is_journal()) {
    auto logger = std::make_shared<spdlog::logger>("lockbridge", std::make_shared<journald_sink>());
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(level));
    return;
  }
  auto logger = std::make_shared<spdlog::logger>("lockbridge",
                                                  std::make_shared<escaping_stderr_sink>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::info);
}

/// Keys set from outside the file, in order of precedence (the environment's
/// `LOCKBRIDGE_<SECTION>__<KEY>`, then `--set section.key=value`).
std::vector<lockbridge::config::override_value> overrides;

/// Loads the config or prints every error (file:line:column: key: message).
std::optional<lockbridge::config::gateway_config>
load_config(const std::string& file, bool reloading = false,
            lockbridge::config::load_purpose purpose = lockbridge::config::load_purpose::run) {
  auto result = lockbridge::config::load(file, overrides, purpose);
  // Errors quote values from the file: echoed escaped, so a value with a
  // newline cannot start a line of its own.
  using lockbridge::protocol::printable_text;
  if (reloading) {
    for (const auto& w : result.warnings)
      spdlog::warn("reload: {}", printable_text(w.to_string()));
    for (const auto& e : result.errors)
      spdlog::error("reload: {}", printable_text(e.to_string()));
    return result.config;
  }
  for (const auto& w : result.warnings)
    std::cerr << "lockbridge: warning: " << printable_text(w.to_string()) << "\n";
  for (const auto& e : result.errors)
    std::cerr << "lockbridge: " << printable_text(e.to_string()) << "\n";
  if (!result.errors.empty())
    std::cerr << "lockbridge: " << result.errors.size() << " error(s) in " << file
              << "; nothing was started\n";
  return result.config;
}

/// Answers one request on the local socket (`status`, or `command <name>
/// <json>`) by asking the supervisor.
std::string answer_local(caf::actor_system& sys, const lockbridge::supervisor_actor& sup,
                         const std::string& request) {
  caf::scoped_actor self{sys};
  std::string out;
  auto on_error = [&](caf::error& err) {
    out = lockbridge::protocol::dump_safe(nlohmann::json{{"error", caf::to_string(err)}});
  };
  if (request == "status") {
    self->request(sup, std::chrono::seconds{5}, lockbridge::atom::get_v)
      .receive([&](std::string& text) { out = std::move(text); }, on_error);
    return out;
  }
  // "command <name> <json>": the local operator's path to the commands that
  // must work without the cloud (erase_subject).
  static constexpr std::string_view prefix = "command ";
  auto space = request.find(' ', prefix.size());
  if (!request.starts_with(prefix) || space == std::string::npos)
    return nlohmann::json{{"error", "unknown request; expected \"status\" or "
                                    "\"command <name> <json>\""}}
      .dump();
  auto name = request.substr(prefix.size(), space - prefix.size());
  auto payload = request.substr(space + 1);
  self->request(sup, std::chrono::seconds{60}, lockbridge::atom::command_v, name, payload)
    .receive([&](std::string& text) { out = std::move(text); }, on_error);
  return out;
}

/// `lockbridge reload` (the unit's ExecReload): reads and validates the
/// file like SIGHUP does, and says whether it was taken, so that a refused
/// reload fails visibly instead of reporting success.
std::string reload_from_socket(caf::actor_system& sys, const std::string& file,
                               const lockbridge::supervisor_actor& sup) {
  spdlog::info("reload: reading {} (lockbridge reload)", file);
  auto result = lockbridge::config::load(file, overrides);
  if (!result.config) {
    nlohmann::json errors = nlohmann::json::array();
    for (const auto& e : result.errors) {
      spdlog::error("reload: {}", lockbridge::protocol::printable_text(e.to_string()));
      errors.push_back(lockbridge::protocol::printable_text(e.to_string()));
    }
    spdlog::error("reload: {} has errors (listed above); the running configuration stays in force",
                  file);
    caf::anon_send(sup, lockbridge::atom::reload_v, lockbridge::config_ptr{});
    return lockbridge::protocol::dump_safe(nlohmann::json{{"ok", false}, {"errors", errors}});
  }
  // The supervisor's answer says what was applied and what needs a restart.
  caf::scoped_actor self{sys};
  std::string out;
  self
    ->request(sup, std::chrono::seconds{20}, lockbridge::atom::reload_v,
              lockbridge::config_ptr{
                std::make_shared<const lockbridge::config::gateway_config>(*result.config)})
    .receive([&](std::string& text) { out = std::move(text); },
             [&](caf::error& err) {
               out = lockbridge::protocol::dump_safe(
                 nlohmann::json{{"ok", false}, {"errors", {caf::to_string(err)}}});
             });
  return out;
}

/// `lockbridge reload`: asks the running daemon to reload its file. Exit 0
/// if it took the file, 78 if the file has errors (printed; the daemon keeps
/// its configuration), 3 if no daemon runs.
int reload_command(const std::string& file) {
  auto cfg = load_config(file, false, lockbridge::config::load_purpose::locate);
  if (!cfg)
    return exit_config;
  auto reply = lockbridge::query_status(cfg->status_socket, 30, "reload");
  if (!reply.ok) {
    std::cerr << "lockbridge: " << reply.text << "\n";
    return reply.not_running ? exit_not_running : exit_failure;
  }
  auto doc = nlohmann::json::parse(reply.text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("ok")) {
    std::cerr << "lockbridge: the daemon answered: " << reply.text;
    return exit_failure;
  }
  auto list = [&](const char* key) {
    std::string out;
    if (doc.contains(key) && doc[key].is_array())
      for (const auto& k : doc[key])
        out += (out.empty() ? "" : ", ")
               + (k.is_string() ? k.get<std::string>() : lockbridge::protocol::dump_safe(k));
    return out;
  };
  if (!doc.value("ok", false) && !doc.contains("refused")) {
    std::cerr << "lockbridge: the daemon refused the reload; it keeps its configuration\n";
    return exit_config;
  }
  std::cout << "reloaded " << file << "\n";
  if (auto applied = list("applied"); !applied.empty())
    std::cout << "  applied: " << applied << "\n";
  if (auto later = list("needs_restart"); !later.empty())
    std::cout << "  changed, but taking effect only after a restart (systemctl restart "
                 "lockbridge): "
              << later << "\n";
  if (doc.contains("refused") && doc["refused"].is_object()) {
    for (const auto& [what, why] : doc["refused"].items())
      std::cerr << "lockbridge: not applied: " << what << ": "
                << (why.is_string() ? why.get<std::string>()
                                    : lockbridge::protocol::dump_safe(why))
                << "\n";
    return exit_failure;
  }
  return exit_ok;
}

/// The exit code of a failure of `kind` (docs/operations.md, "When things fail").
int exit_code_of(lockbridge::failure_kind kind) {
  switch (kind) {
  case lockbridge::failure_kind::configuration: return exit_config;
  case lockbridge::failure_kind::state: return exit_state;
  case lockbridge::failure_kind::environment: return exit_environment;
  default: return exit_failure;
  }
}

/// The one line a refused start prints (stderr, or the journal under
/// systemd), with the stage that failed; returns the exit code.
int refuse_start(lockbridge::failure_kind kind, std::string_view stage, const std::string& why) {
  spdlog::critical("lockbridge: cannot start ({}): {}", stage,
                   lockbridge::protocol::printable_text(why));
  spdlog::default_logger()->flush();
  sd_notifyf(0, "STATUS=not started: %s failed", std::string{stage}.c_str());
  return exit_code_of(kind);
}

/// Refuses a UDP listen address another process already holds. libcoap
/// binds with SO_REUSEADDR, with which Linux lets two processes share a UDP
/// port (the later one takes the traffic); this probe binds without it
/// first, so a port in use by anyone is found before libcoap shares it.
void probe_udp_port(const lockbridge::config::listen_address& a, std::string_view key) {
  int err = lockbridge::transport::try_bind(a, SOCK_DGRAM);
  if (err == 0 || err == EINVAL) // EINVAL: not numeric; the config check names it
    return;
  auto where = a.host + ":" + std::to_string(a.port);
  if (err == EADDRINUSE) {
    auto holder = lockbridge::transport::port_holder(a.port, SOCK_DGRAM);
    throw lockbridge::environment_error{
      std::string{key} + " " + where + ": the UDP port is held by "
      + (holder ? *holder : std::string{"another process"}) + " (`ss -ulpn 'sport = :"
      + std::to_string(a.port) + "'` shows which); stop it, or choose another port"};
  }
  throw lockbridge::environment_error{std::string{key} + " " + where + ": cannot listen there ("
                                      + std::strerror(err) + "); is the address this machine's?"};
}

/// Why the process ends after READY, set before SIGUSR1 is raised.
std::atomic<int> fatal_exit_code{exit_failure};

int run(const std::string& file, bool start_empty) {
  // Block the signals before any thread starts, so that only sigwait sees them.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1})
    sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Blocks of 12 KiB and more come from their own mappings, not the heap.
  // Each DTLS session holds two OpenSSL buffers of 16.7 and 21.8 KiB of
  // which it writes a page or two: in a mapping the untouched pages are
  // never resident, and a closed session's buffers go back to the system at
  // once instead of leaving holes in the heap (docs/design.md, decision 58).
  mallopt(M_MMAP_THRESHOLD, 12 * 1024);

  // Stage 1: the configuration (exit 78 with every error listed).
  auto cfg = load_config(file);
  if (!cfg)
    return exit_config;
  setup_logging(cfg->log_level);
  spdlog::info("lockbridge {} starting: site {}, gateway {}, {} locks, {} environment",
               LOCKBRIDGE_VERSION, cfg->site, cfg->gateway, cfg->locks.size(),
               cfg->environment == lockbridge::config::run_environment::production
                 ? "production"
                 : "development");

  // Stage 2: keys and state. The state is checked before LMDB maps it, must
  // be this gateway's, and opens with this key-encryption key, or the start
  // ends here (65 damaged or foreign, 69 held by another process).
  std::shared_ptr<lockbridge::store::vault> vault;
  try {
    vault = lockbridge::open_state(*cfg, true, start_empty);
  } catch (const std::exception& e) {
    return refuse_start(lockbridge::kind_of(e), "state", e.what());
  }
  if (start_empty)
    spdlog::warn("lockbridge: started with --start-empty: whatever state {} held before is not "
                 "used",
                 cfg->store.state_dir.string());

  // Stage 3: the listeners, before any actor: a port another process holds
  // or a status socket that cannot be made ends the start (69).
  std::atomic<bool> started{false};
  std::optional<lockbridge::supervisor_actor> sup_slot;
  std::mutex sup_mutex;
  caf::actor_system_config sys_cfg;
  sys_cfg.set("logger.console", caf::atom("none"));
  sys_cfg.set("logger.verbosity", caf::atom("quiet"));
  // Work sharing: idle workers block on a condition variable. CAF 0.17's
  // work stealing polls with sleeps instead (up to 10 ms once relaxed), which
  // burns CPU on a small box and adds that sleep to a lock's answer.
  sys_cfg.set("scheduler.policy", caf::atom("sharing"));
  sys_cfg.set("scheduler.max-threads", 1);
  int exit_code = exit_ok;
  // Run-time log level changes (`lockbridge log-level`), audited; each
  // lock's events waiting, counted from the journal for `lockbridge status`.
  lockbridge::log_level_control log_level{
    [audit_to = vault](std::string_view action, nlohmann::json detail) {
      detail["by"] = "local socket";
      lockbridge::store::audit(*audit_to, action, std::move(detail));
    }};
  auto journal_store = vault->events;
  {
    caf::actor_system sys{sys_cfg};
    std::unique_ptr<lockbridge::status_socket> status;
    std::unique_ptr<lockbridge::metrics_endpoint> metrics;
    try {
      for (const auto& a : cfg->coap.dtls_listen)
        probe_udp_port(a, "coap.dtls_listen");
      for (const auto& a : cfg->coap.plain_listen)
        probe_udp_port(a, "coap.plain_listen");
      try {
        status = std::make_unique<lockbridge::status_socket>(
          cfg->status_socket, [&](const std::string& request) {
            std::optional<lockbridge::supervisor_actor> sup;
            {
              std::lock_guard guard{sup_mutex};
              sup = sup_slot;
            }
            if (!sup || !started)
              return lockbridge::protocol::dump_safe(
                nlohmann::json{{"error", "the gateway is starting"}});
            if (request == "reload")
              return reload_from_socket(sys, file, *sup);
            if (request.starts_with("log-level "))
              return log_level.request(std::string_view{request}.substr(10));
            auto answer = answer_local(sys, *sup, request);
            if (request != "status")
              return answer;
            auto doc = nlohmann::json::parse(answer, nullptr, false);
            if (doc.is_discarded() || !doc.is_object() || doc.contains("error"))
              return answer;
            try {
              lockbridge::add_pending_by_lock(doc, *journal_store);
            } catch (const std::exception& e) {
              doc["pending_error"] = e.what();
            }
            return lockbridge::protocol::dump_safe(doc);
          });
      } catch (const std::exception& e) {
        throw lockbridge::environment_error{std::string{"gateway.status_socket: "} + e.what()};
      }
      if (cfg->metrics_listen) {
        try {
          metrics = std::make_unique<lockbridge::metrics_endpoint>(*cfg->metrics_listen, [&] {
            std::optional<lockbridge::supervisor_actor> sup;
            {
              std::lock_guard guard{sup_mutex};
              sup = sup_slot;
            }
            if (!sup || !started)
              return std::string{R"({"error":"the gateway is starting"})"};
            return answer_local(sys, *sup, "status");
          });
        } catch (const std::exception& e) {
          throw lockbridge::environment_error{std::string{"metrics.listen "} + e.what()};
        }
      }
    } catch (const std::exception& e) {
      return refuse_start(lockbridge::kind_of(e), "listeners", e.what());
    }

    // Stage 4: the actors. The supervisor starts the transports and the
    // actors and says whether it could; READY only then.
    lockbridge::supervisor_config sup_cfg;
    sup_cfg.gateway = *cfg;
    sup_cfg.version = LOCKBRIDGE_VERSION;
    sup_cfg.vault = std::move(vault);
    std::uint64_t watchdog_us = 0;
    if (sd_watchdog_enabled(0, &watchdog_us) > 0 && watchdog_us > 0) {
      sup_cfg.watchdog_interval = std::chrono::milliseconds{watchdog_us / 2000};
      sup_cfg.on_watchdog = [] { sd_notify(0, "WATCHDOG=1"); };
      spdlog::info("lockbridge: feeding the systemd watchdog every {} ms",
                   sup_cfg.watchdog_interval.count());
    }
    auto outcome = std::make_shared<std::promise<std::optional<std::pair<lockbridge::failure_kind,
                                                                         std::string>>>>();
    auto start_result = outcome->get_future();
    sup_cfg.on_ready = [outcome] { outcome->set_value(std::nullopt); };
    sup_cfg.on_start_failed = [outcome](lockbridge::failure_kind kind, const std::string& why) {
      outcome->set_value(std::make_pair(kind, why));
    };
    sup_cfg.on_fatal = [](lockbridge::failure_kind kind, const std::string&) {
      fatal_exit_code = exit_code_of(kind);
      ::kill(::getpid(), SIGUSR1);
    };
    auto sup = sys.spawn(lockbridge::supervisor, sup_cfg);
    if (start_result.wait_for(std::chrono::seconds{60}) != std::future_status::ready) {
      spdlog::critical("lockbridge: cannot start (actors): they did not start within 60 s");
      spdlog::default_logger()->flush();
      std::_Exit(exit_failure); // actors that hang cannot be awaited
    }
    if (auto failed = start_result.get()) {
      status.reset();
      metrics.reset();
      sys.await_all_actors_done();
      return refuse_start(failed->first, "actors", failed->second);
    }
    {
      std::lock_guard guard{sup_mutex};
      sup_slot = sup;
    }
    started = true;
    sd_notify(0, "READY=1\nSTATUS=listening");
    spdlog::info("lockbridge: ready");
    for (;;) {
      int sig = 0;
      sigwait(&signals, &sig);
      if (sig == SIGHUP) {
        sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
        spdlog::info("reload: reading {}", file);
        if (auto next = load_config(file, true)) {
          caf::anon_send(sup, lockbridge::atom::reload_v,
                         lockbridge::config_ptr{
                           std::make_shared<const lockbridge::config::gateway_config>(*next)});
        } else {
          spdlog::error("reload: {} has errors (listed above); the running configuration stays "
                        "in force",
                        file);
          // An empty config: the supervisor audits the refused reload.
          caf::anon_send(sup, lockbridge::atom::reload_v, lockbridge::config_ptr{});
        }
        sd_notify(0, "READY=1\nSTATUS=listening");
        continue;
      }
      if (sig == SIGUSR1) {
        exit_code = fatal_exit_code;
        spdlog::critical("lockbridge: stopping after a failure it cannot repair (exit {})",
                         exit_code);
      } else {
        spdlog::info("lockbridge: stopping on {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      }
      break;
    }
    sd_notify(0, "STOPPING=1");
    started = false;
    status.reset();
    metrics.reset();
    caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
    sys.await_all_actors_done();
  }
  spdlog::info("lockbridge: stopped");
  return exit_code;
}

/// Runs `body` on the store named by the config in `file`, without starting
/// anything (a running daemon is not disturbed: LMDB readers). Creates nothing:
/// a store made by root here would later be unwritable for the service's user.
int with_store(const std::string& file,
               const std::function<int(const lockbridge::config::gateway_config&,
                                       lockbridge::store::vault&)>& body) {
  auto cfg = load_config(file);
  if (!cfg)
    return exit_config;
  if (!std::filesystem::exists(cfg->store.state_dir / "data.mdb")) {
    std::cerr << "lockbridge: no state yet in " << cfg->store.state_dir.string()
              << " (the daemon has not run there)\n";
    return exit_failure;
  }
  try {
    auto vault = lockbridge::open_state(*cfg, false);
    return body(*cfg, *vault);
  } catch (const std::exception& e) {
    std::cerr << "lockbridge: cannot read the store in " << cfg->store.state_dir.string() << ": "
              << e.what() << "\n";
    return exit_failure;
  }
}

/// The running daemon's status document, if a daemon answers on the
/// config's socket. Reading the config to find the socket opens no secret,
/// so the `lockbridge` group can use the stats commands under the shipped
/// unit, where only the daemon holds the key-encryption key.
std::optional<nlohmann::json> daemon_status(const std::string& file) {
  auto result = lockbridge::config::load(file, overrides, lockbridge::config::load_purpose::locate);
  if (!result.config)
    return std::nullopt;
  auto reply = lockbridge::query_status(result.config->status_socket, 5);
  if (!reply.ok)
    return std::nullopt;
  auto doc = nlohmann::json::parse(reply.text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || doc.contains("error"))
    return std::nullopt;
  return doc;
}

void print_credentials(std::uint64_t count, std::uint64_t version, std::int64_t synced_at,
                       std::uint32_t max_age_hours, bool as_json) {
  auto now = lockbridge::protocol::unix_ms_now();
  auto max_age_ms = std::int64_t{max_age_hours} * 3600 * 1000;
  bool stale = synced_at == 0 || now - synced_at > max_age_ms;
  if (as_json) {
    std::cout << "{\"count\":" << count << ",\"version\":" << version
              << ",\"synced_at\":" << synced_at << ",\"age_s\":"
              << (synced_at == 0 ? -1 : (now - synced_at) / 1000)
              << ",\"stale\":" << (stale ? "true" : "false")
              << ",\"max_age_hours\":" << max_age_hours << "}\n";
    return;
  }
  std::cout << "credentials:   " << count << "\n"
            << "version:       " << version << (version == 0 ? " (never synced)" : "") << "\n";
  if (synced_at != 0)
    std::cout << "last sync:     " << (now - synced_at) / 1000 << " s ago\n";
  std::cout << "stale:         " << (stale ? "yes" : "no") << " (maximum age " << max_age_hours
            << " h; then doors follow their offline policy)\n";
}

/// `lockbridge credentials stats`: from the running daemon if there is one
/// (no key needed), otherwise from the store, without starting anything.
int credentials_stats(const std::string& file, bool as_json) {
  if (auto doc = daemon_status(file); doc && doc->contains("credentials")) {
    auto cfg = load_config(file, false, lockbridge::config::load_purpose::locate);
    const auto& c = (*doc)["credentials"];
    print_credentials(c.value("count", std::uint64_t{0}), c.value("version", std::uint64_t{0}),
                      c.value("synced_at", std::int64_t{0}),
                      cfg ? cfg->credentials.max_age_hours : 0, as_json);
    return exit_ok;
  }
  return with_store(file, [as_json](const lockbridge::config::gateway_config& cfg,
                                    lockbridge::store::vault& vault) {
    auto f = vault.credentials->figures();
    print_credentials(f.count, f.version, f.synced_at, cfg.credentials.max_age_hours, as_json);
    return exit_ok;
  });
}

/// `lockbridge status` and `lockbridge locks`: the running daemon's figures,
/// over its local socket. Exit 3 (LSB "not running") when nothing listens;
/// never waits more than 5 s (10 with the journal's per-lock count).
int show_status(const std::string& file, bool as_json, bool locks_only) {
  auto cfg = load_config(file, false, lockbridge::config::load_purpose::locate);
  if (!cfg)
    return exit_config;
  auto reply = lockbridge::query_status(cfg->status_socket, 10);
  if (!reply.ok) {
    std::cerr << "lockbridge: " << reply.text << "\n";
    return reply.not_running ? exit_not_running : exit_failure;
  }
  auto doc = nlohmann::json::parse(reply.text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || doc.contains("error")) {
    std::cerr << "lockbridge: the daemon answered: " << reply.text;
    return exit_failure;
  }
  if (as_json) {
    auto out = locks_only ? nlohmann::json{{"ts", doc.value("ts", std::int64_t{0})},
                                           {"locks", doc.value("lock_table", nlohmann::json::array())},
                                           {"strangers",
                                            doc.value("strangers", nlohmann::json::array())},
                                           {"pending_complete",
                                            doc.value("pending_complete", true)}}
                          : doc;
    std::cout << lockbridge::protocol::dump_safe(out) << "\n";
    return exit_ok;
  }
  if (locks_only)
    lockbridge::views::print_locks(doc, std::cout);
  else
    lockbridge::views::print_status(doc, std::cout);
  return exit_ok;
}

/// `lockbridge log-level LEVEL [--for DURATION]`: through the local socket;
/// the daemon audits the change.
int set_log_level(const std::string& file, const std::string& level, const std::string& span) {
  std::int64_t seconds = 0;
  if (!span.empty()) {
    // 90, 90s, 15m, 2h, 1d
    std::size_t used = 0;
    long long n = -1;
    try {
      n = std::stoll(span, &used);
    } catch (const std::exception&) {
    }
    auto unit = span.substr(used);
    std::int64_t scale = unit.empty() || unit == "s" ? 1
                         : unit == "m"               ? 60
                         : unit == "h"               ? 3600
                         : unit == "d"               ? 86400
                                                     : 0;
    if (n <= 0 || scale == 0 || n > lockbridge::log_level_control::max_seconds / scale) {
      std::cerr << "lockbridge: --for " << lockbridge::protocol::printable_text(span)
                << ": expected a duration such as 90s, 15m, 2h or 1d, at most 7d\n";
      return exit_usage;
    }
    seconds = n * scale;
  }
  auto cfg = load_config(file, false, lockbridge::config::load_purpose::locate);
  if (!cfg)
    return exit_config;
  auto reply = lockbridge::query_status(cfg->status_socket, 5,
                                        "log-level " + level + " " + std::to_string(seconds));
  if (!reply.ok) {
    std::cerr << "lockbridge: " << reply.text << "\n";
    return reply.not_running ? exit_not_running : exit_failure;
  }
  auto doc = nlohmann::json::parse(reply.text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.value("ok", false)) {
    std::cerr << "lockbridge: "
              << (doc.is_object() && doc.contains("error") ? doc.value("error", "")
                                                           : "the daemon answered: " + reply.text)
              << "\n";
    return exit_usage;
  }
  std::cout << "log level " << doc.value("level", "") << " (was " << doc.value("previous", "")
            << ")"
            << (seconds > 0 ? "; back to " + doc.value("previous", "") + " in "
                                + lockbridge::human::duration(seconds)
                            : std::string{"; until the next restart or reload"})
            << "\n";
  return exit_ok;
}

/// `lockbridge journal stats`: what waits for the broker, read from the store
/// without the daemon (or beside it).
int journal_stats(const std::string& file, bool as_json) {
  auto print = [as_json](const lockbridge::protocol::journal_figures& f) {
    auto age_s = f.oldest_received_at == 0
                   ? 0
                   : (lockbridge::protocol::unix_ms_now() - f.oldest_received_at) / 1000;
    if (as_json) {
      std::cout << "{\"depth\":" << f.depth << ",\"bytes\":" << f.bytes
                << ",\"limit_bytes\":" << f.limit_bytes
                << ",\"oldest_received_at\":" << f.oldest_received_at
                << ",\"oldest_age_s\":" << age_s << "}\n";
    } else {
      std::cout << "waiting for the broker: " << f.depth << " events, "
                << lockbridge::human::bytes(f.bytes) << " of "
                << lockbridge::human::bytes(f.limit_bytes) << " ("
                << lockbridge::human::percent(static_cast<double>(f.bytes),
                                              static_cast<double>(f.limit_bytes))
                << ")\n";
      if (f.depth > 0)
        std::cout << "oldest:                 received " << lockbridge::human::duration(age_s)
                  << " ago\n";
    }
    return exit_ok;
  };
  // From the running daemon if there is one (no key needed), else the store.
  if (auto doc = daemon_status(file); doc && doc->contains("journal")) {
    const auto& j = (*doc)["journal"];
    lockbridge::protocol::journal_figures f;
    f.depth = j.value("depth", std::uint64_t{0});
    f.bytes = j.value("bytes", std::uint64_t{0});
    f.limit_bytes = j.value("limit_bytes", std::uint64_t{0});
    f.oldest_received_at = j.value("oldest_received_at", std::int64_t{0});
    return print(f);
  }
  return with_store(file, [&print](const lockbridge::config::gateway_config&,
                                   lockbridge::store::vault& vault) {
    return print(vault.events->figures());
  });
}

/// Sends a command to the running daemon over its local socket (no cloud
/// needed) and prints the result. Exit 0 if it succeeded, 1 if refused or
/// failed, 3 if the daemon is not running.
int local_command(const std::string& file, const std::string& name, nlohmann::json payload,
                  bool as_json) {
  auto cfg = load_config(file, false, lockbridge::config::load_purpose::locate);
  if (!cfg)
    return exit_config;
  if (!payload.contains("id"))
    payload["id"] = "local-" + std::to_string(lockbridge::protocol::unix_ms_now());
  auto reply = lockbridge::query_status(cfg->status_socket, 70,
                                        "command " + name + " "
                                          + lockbridge::protocol::dump_safe(payload));
  if (!reply.ok) {
    std::cerr << "lockbridge: " << reply.text << "\n";
    return reply.not_running ? exit_not_running : exit_failure;
  }
  auto doc = nlohmann::json::parse(reply.text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()
      || (doc.contains("error") && !doc.contains("status"))) {
    std::cerr << "lockbridge: the daemon answered: " << reply.text;
    return exit_failure;
  }
  if (as_json) {
    std::cout << lockbridge::protocol::dump_safe(doc) << "\n";
  } else {
    std::cout << name << " " << doc.value("id", "") << ": " << doc.value("status", "") << "\n";
    if (doc.contains("error"))
      std::cout << "  " << doc["error"].value("field", "") << ": "
                << doc["error"].value("message", "") << "\n";
    if (doc.contains("detail"))
      std::cout << "  " << doc.value("detail", "") << "\n";
    if (doc.contains("receipt"))
      for (const auto& [k, v] : doc["receipt"].items())
        std::cout << "  " << k << ": " << lockbridge::protocol::dump_safe(v) << "\n";
    std::cout << "(the result is also published on cmd_result, now or when the broker is back)\n";
  }
  auto status = doc.value("status", "");
  return status == "ok" || status == "pending" ? exit_ok : exit_failure;
}

/// Prints one table report line per table.
void print_tables(const std::vector<lockbridge::store::table_report>& tables, const char* what) {
  for (const auto& t : tables)
    std::cout << "  " << t.table << ": " << t.records << " " << what
              << (t.unreadable > 0 ? ", " + std::to_string(t.unreadable) + " DO NOT OPEN" : "")
              << "\n";
}

nlohmann::json tables_json(const std::vector<lockbridge::store::table_report>& tables) {
  auto out = nlohmann::json::object();
  for (const auto& t : tables)
    out[t.table] = {{"records", t.records}, {"unreadable", t.unreadable}};
  return out;
}

/// `lockbridge state check`: offline, walks every table (in a child
/// process, so damage cannot crash this one) and opens every sealed value.
/// Exit 0 if the state is sound, 65 naming what is damaged.
int state_check(const std::string& file, bool as_json) {
  auto cfg = load_config(file);
  if (!cfg)
    return exit_config;
  namespace store = lockbridge::store;
  const auto& dir = cfg->store.state_dir;
  store::check_report report;
  std::optional<store::state_identity> identity;
  try {
    identity = store::read_identity_file(dir);
  } catch (const std::exception& e) {
    report.structure = e.what();
  }
  auto data = dir / "data.mdb";
  std::error_code ec;
  if (!report.structure) {
    if (!std::filesystem::exists(data, ec) || std::filesystem::file_size(data, ec) == 0) {
      report.structure = identity ? data.string() + " is missing or empty although "
                                      + (dir / "identity").string() + " records state of "
                                      + identity->site + "/" + identity->gateway
                                  : "no state in " + dir.string();
    } else if (auto problem = store::check_meta_pages(dir)) {
      report.structure = *problem;
    } else if (auto walk = store::walk_in_child(dir, std::chrono::seconds{600})) {
      report.structure = data.string() + " is damaged: " + *walk;
    }
  }
  if (!report.structure) {
    try {
      auto vault = lockbridge::open_state(*cfg, false);
      report.tables = store::check_values(*vault->env, *vault->keys);
    } catch (const std::exception& e) {
      report.structure = e.what();
    }
  }
  if (as_json) {
    nlohmann::json doc{{"ok", report.ok()}, {"tables", tables_json(report.tables)}};
    if (report.structure)
      doc["damage"] = *report.structure;
    std::cout << lockbridge::protocol::dump_safe(doc) << "\n";
  } else if (report.structure) {
    std::cout << "state DAMAGED: " << *report.structure << "\n"
              << "next: `lockbridge state salvage --to DIR` copies what can still be read; or "
                 "restore a backup (docs/operations.md, Recovery)\n";
  } else {
    std::cout << (report.ok() ? "state sound" : "state has values that do not open") << " ("
              << dir.string() << ")\n";
    print_tables(report.tables, "records");
    if (!report.ok())
      std::cout << "values that do not open are moved to quarantine by the daemon as it meets "
                   "them; `state salvage` leaves them behind\n";
  }
  return report.ok() ? exit_ok : exit_state;
}

/// `lockbridge state salvage --to DIR`: copies every record that can still
/// be read into a new state in DIR and says what was lost. The daemon must
/// be stopped; DIR then replaces the state directory (docs/operations.md).
int state_salvage(const std::string& file, const std::filesystem::path& to, bool as_json) {
  auto cfg = load_config(file);
  if (!cfg)
    return exit_config;
  namespace store = lockbridge::store;
  const auto& from = cfg->store.state_dir;
  if (std::filesystem::weakly_canonical(from) == std::filesystem::weakly_canonical(to)) {
    std::cerr << "lockbridge: --to must be a new directory, not the state directory itself\n";
    return exit_usage;
  }
  store::salvage_report report;
  std::vector<store::table_report> unreadable;
  try {
    report = store::salvage_raw(from, to);
    // The identity travels with the state: the salvaged copy is this
    // gateway's, and its identity file must say so too.
    if (auto identity = store::read_identity_file(from))
      store::write_identity_file(to, *identity);
    {
      store::environment env{to, store::map_size_for(cfg->store.journal_max_bytes), false};
      store::recount_journal(env);
    }
    auto copy = *cfg;
    copy.store.state_dir = to;
    auto vault = lockbridge::open_state(copy, true);
    unreadable = store::check_values(*vault->env, *vault->keys);
  } catch (const std::exception& e) {
    std::cerr << "lockbridge: salvage failed: " << e.what() << "\n";
    return lockbridge::kind_of(e) == lockbridge::failure_kind::state ? exit_state : exit_failure;
  }
  std::uint64_t lost = 0;
  for (auto& t : report.lost)
    for (const auto& u : unreadable)
      if (u.table == t.table)
        t.unreadable = u.unreadable;
  for (const auto& t : report.lost)
    lost += t.records + t.unreadable;
  if (as_json) {
    nlohmann::json doc{{"copied", tables_json(report.copied)},
                       {"lost", tables_json(report.lost)},
                       {"notes", report.notes},
                       {"to", to.string()}};
    std::cout << lockbridge::protocol::dump_safe(doc) << "\n";
  } else {
    std::cout << "salvaged into " << to.string() << ":\n";
    print_tables(report.copied, "records copied");
    for (const auto& n : report.notes)
      std::cout << "  note: " << lockbridge::protocol::printable_text(n) << "\n";
    if (lost == 0) {
      std::cout << "nothing was lost.\n";
    } else {
      std::cout << "lost:\n";
      for (const auto& t : report.lost)
        if (t.records + t.unreadable > 0)
          std::cout << "  " << t.table << ": " << t.records << " unreachable, " << t.unreadable
                    << " do not open (left for quarantine)\n";
    }
    std::cout << "next: stop lockbridge, move " << from.string() << " aside, move "
              << to.string() << " in its place (same owner and mode 0700), start it\n";
  }
  return exit_ok;
}

/// `lockbridge audit verify`: walks the audit trail's hash chain in the store
/// (beside a running daemon: a reader) and reports the first broken link.
int audit_verify(const std::string& file, bool as_json) {
  return with_store(file, [as_json](const lockbridge::config::gateway_config&,
                                    lockbridge::store::vault& vault) {
    auto v = vault.audit->verify();
    auto f = vault.audit->figures();
    if (as_json) {
      nlohmann::json doc{{"ok", v.ok},          {"records", v.records},
                         {"first_seq", v.first_seq}, {"next_seq", f.next_seq}};
      if (!v.ok)
        doc["broken_at"] = v.broken_at, doc["reason"] = v.reason;
      std::cout << lockbridge::protocol::dump_safe(doc) << "\n";
    } else if (v.ok) {
      std::cout << "audit trail intact: " << v.records << " records held (seq " << v.first_seq
                << " to " << f.next_seq - 1 << "; earlier ones were delivered to the broker and "
                << "are anchored by the hash of the last one)\n";
    } else {
      std::cout << "audit trail BROKEN at seq " << v.broken_at << ": " << v.reason << "\n"
                << "(" << v.records << " records before it verified; the cloud's copy on the "
                << "audit topic shows what the record said)\n";
    }
    return v.ok ? exit_ok : exit_broken;
  });
}

/// `lockbridge provision lock --id ID`: a random per-lock PSK in a secret
/// file (no default passwords: UK PSTI, ETSI EN 303 645 5.1).
int provision_lock(const std::string& id, const std::filesystem::path& dir, bool force,
                   const std::string& ble_address_text) {
  if (!lockbridge::protocol::is_valid_id(id)) {
    std::cerr << "lockbridge: --id: expected 1-64 of letters, digits, '_' and '-'\n";
    return exit_usage;
  }
  std::string ble_address;
  if (!ble_address_text.empty()) {
    auto a = lockbridge::config::normalise_ble_address(ble_address_text);
    if (!a) {
      std::cerr << "lockbridge: --ble-address: expected six hexadecimal pairs separated by ':' "
                   "(e.g. C0:FF:EE:00:00:01), got \""
                << ble_address_text << "\"\n";
      return exit_usage;
    }
    ble_address = *a;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  auto file = dir / (id + ".psk");
  if (std::filesystem::exists(file) && !force) {
    std::cerr << "lockbridge: " << file
              << " exists; the lock already has a key (use --force to replace it, then "
                 "program the new key into the lock)\n";
    return exit_failure;
  }
  std::array<unsigned char, 16> key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    std::cerr << "lockbridge: OpenSSL could not produce random bytes\n";
    return exit_failure;
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string text;
  for (auto b : key) {
    text += hex[b >> 4];
    text += hex[b & 15];
  }
  auto tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, (text + "\n").data(), text.size() + 1)
                  != static_cast<ssize_t>(text.size() + 1)
      || ::fsync(fd) != 0) {
    std::cerr << "lockbridge: cannot write " << tmp.string() << ": " << std::strerror(errno) << "\n";
    if (fd >= 0)
      ::close(fd);
    return exit_failure;
  }
  // Readable by the service's group if it exists (the Debian package makes it).
  if (auto group = ::getgrnam("lockbridge"); group != nullptr && ::fchown(fd, 0, group->gr_gid) == 0)
    ::fchmod(fd, 0640);
  ::close(fd);
  std::filesystem::rename(tmp, file);
  std::cout << "Lock " << id << " provisioned.\n\n"
            << (ble_address.empty()
                  ? "Program into the lock (its DTLS 1.2 PSK credentials for the gateway):\n"
                  : "Program into the lock (its key for sealing BLE messages to the gateway):\n")
            << "  PSK identity: " << id << "\n"
            << "  PSK:          " << text << "\n"
            << "                (these " << text.size()
            << " ASCII characters are the key, exactly as in the file; "
               "from 128 random bits)\n\n"
            << "Add to the config (nothing secret goes there):\n"
            << "  [[locks]]\n  id = \"" << id << "\"\n  psk_file = \"" << file.string() << "\"\n"
            << (ble_address.empty() ? std::string{}
                                    : "  transport = \"ble\"\n  ble_address = \"" + ble_address + "\"\n")
            << "\n"
            << "Then: lockbridge check-config, and systemctl reload lockbridge (or restart).\n";
  return exit_ok;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"lockbridge: the on-site gateway between door locks and the cloud"};
  app.require_subcommand(1);
  std::string config_file = lockbridge::defaults::config_file;

  auto run_cmd = app.add_subcommand("run", "run the gateway daemon");
  run_cmd->add_option("-c,--config", config_file, "config file")->capture_default_str();
  bool start_empty = false;
  run_cmd->add_flag("--start-empty", start_empty,
                    "start with no state although the state directory records some (after a "
                    "loss you accept; docs/operations.md, Recovery)");
  std::vector<std::string> sets;
  run_cmd->add_option("--set", sets,
                      "section.key=value over the file and the environment (repeatable)");

  auto check_cmd = app.add_subcommand("check-config",
                                      "validate a config file without starting anything");
  std::string check_file = lockbridge::defaults::config_file;
  auto check_positional = check_cmd->add_option("file", check_file, "config file")
                            ->capture_default_str();
  // --config as every other command takes it; the two together are refused.
  check_cmd->add_option("-c,--config", check_file, "config file (the same as FILE)")
    ->excludes(check_positional);
  check_cmd->add_option("--set", sets,
                        "section.key=value over the file and the environment (repeatable)");

  auto creds_cmd = app.add_subcommand("credentials", "inspect the credential set");
  creds_cmd->require_subcommand(1);
  auto stats_cmd = creds_cmd->add_subcommand(
    "stats", "count, version and age of the credential set (without the daemon)");
  std::string stats_config = lockbridge::defaults::config_file;
  bool stats_json = false;
  stats_cmd->add_option("-c,--config", stats_config, "config file")->capture_default_str();
  stats_cmd->add_flag("--json", stats_json, "print one JSON object");

  auto status_cmd = app.add_subcommand(
    "status", "the running daemon's figures (local socket); exit 3 if it is not running");
  std::string status_config = lockbridge::defaults::config_file;
  bool status_json = false;
  status_cmd->add_option("-c,--config", status_config, "config file (for the socket's path)")
    ->capture_default_str();
  status_cmd->add_flag("--json", status_json, "print the JSON document");

  auto doctor_cmd = app.add_subcommand(
    "doctor", "check the config and what the machine gives the service (files as its user, "
              "ports, broker, clock, BlueZ, disk); exit 0 OK, 1 warnings, 2 errors");
  lockbridge::doctor::options doctor_opts{lockbridge::defaults::config_file, "", false};
  doctor_cmd->add_option("-c,--config", doctor_opts.config_file, "config file")
    ->capture_default_str();
  doctor_cmd->add_option("--user", doctor_opts.user,
                         "the service's user, to check the files as (root only; default "
                         "lockbridge)");
  doctor_cmd->add_flag("--json", doctor_opts.json, "print the findings as JSON");

  auto locks_cmd = app.add_subcommand(
    "locks", "the lock table alone: available, last seen, events waiting, last refusal");
  locks_cmd->add_option("-c,--config", status_config, "config file (for the socket's path)")
    ->capture_default_str();
  locks_cmd->add_flag("--json", status_json, "print the table as JSON");

  auto log_level_cmd = app.add_subcommand(
    "log-level", "change the running daemon's log level (audited); back after --for");
  std::string log_level_value;
  std::string log_level_for;
  log_level_cmd->add_option("-c,--config", status_config, "config file (for the socket's path)")
    ->capture_default_str();
  log_level_cmd->add_option("level", log_level_value, "trace, debug, info, warn or error")
    ->required()
    ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  log_level_cmd->add_option("--for", log_level_for,
                            "how long (90s, 15m, 2h, 1d; at most 7d); without it, until the "
                            "next restart or reload");

  auto journal_cmd = app.add_subcommand("journal", "inspect the event journal (outbox)");
  journal_cmd->require_subcommand(1);
  auto journal_stats_cmd = journal_cmd->add_subcommand(
    "stats", "events waiting for the broker, bytes against the bound, oldest (without the daemon)");
  std::string journal_config = lockbridge::defaults::config_file;
  bool journal_json = false;
  journal_stats_cmd->add_option("-c,--config", journal_config, "config file")->capture_default_str();
  journal_stats_cmd->add_flag("--json", journal_json, "print one JSON object");

  auto provision_cmd = app.add_subcommand("provision", "make secrets for new equipment");
  provision_cmd->require_subcommand(1);
  auto provision_lock_cmd = provision_cmd->add_subcommand(
    "lock", "make a random PSK for a lock and print what to program into it");
  std::string provision_id;
  std::string provision_dir = "/etc/lockbridge/locks";
  bool provision_force = false;
  provision_lock_cmd->add_option("--id", provision_id, "the lock's id (its PSK identity)")
    ->required();
  provision_lock_cmd->add_option("--dir", provision_dir, "where the PSK file goes")
    ->capture_default_str();
  provision_lock_cmd->add_flag("--force", provision_force, "replace an existing key");
  std::string provision_ble;
  provision_lock_cmd->add_option("--ble-address", provision_ble,
                                 "a BLE lock's address (AA:BB:CC:DD:EE:FF); omit for CoAP");

  auto audit_cmd = app.add_subcommand("audit", "the tamper-evident audit trail");
  audit_cmd->require_subcommand(1);
  auto audit_verify_cmd = audit_cmd->add_subcommand(
    "verify", "walk the hash chain; exit 0 if intact, 2 naming the first broken link");
  std::string audit_config = lockbridge::defaults::config_file;
  bool audit_json = false;
  audit_verify_cmd->add_option("-c,--config", audit_config, "config file")->capture_default_str();
  audit_verify_cmd->add_flag("--json", audit_json, "print one JSON object");

  auto erase_cmd = app.add_subcommand(
    "erase-subject", "remove every local trace of a subject, now, without the cloud (daemon "
                     "must run; the receipt also goes to cmd_result)");
  std::string erase_config = lockbridge::defaults::config_file;
  std::string erase_subject;
  std::string erase_id;
  bool erase_json = false;
  erase_cmd->add_option("--subject", erase_subject, "the subject id as the cloud knows it")
    ->required();
  erase_cmd->add_option("--id", erase_id, "command id for the receipt (default: local-<ms>)");
  erase_cmd->add_option("-c,--config", erase_config, "config file")->capture_default_str();
  erase_cmd->add_flag("--json", erase_json, "print the result JSON");

  auto keys_cmd = app.add_subcommand("keys", "data-protection keys");
  keys_cmd->require_subcommand(1);
  auto rotate_cmd = keys_cmd->add_subcommand(
    "rotate", "start a new pseudonym epoch and/or data key now (daemon must run)");
  std::string rotate_config = lockbridge::defaults::config_file;
  bool rotate_epoch = false, rotate_data = false;
  rotate_cmd->add_flag("--pseudonym-epoch", rotate_epoch, "begin a new pseudonym epoch");
  rotate_cmd->add_flag("--data-key", rotate_data, "make a new data key and re-seal the state");
  rotate_cmd->add_option("-c,--config", rotate_config, "config file")->capture_default_str();

  auto state_cmd = app.add_subcommand("state", "check or salvage the state (daemon stopped)");
  state_cmd->require_subcommand(1);
  auto state_check_cmd = state_cmd->add_subcommand(
    "check", "walk every table and open every sealed value; exit 0 if sound, 65 naming the damage");
  std::string state_config = lockbridge::defaults::config_file;
  bool state_json = false;
  state_check_cmd->add_option("-c,--config", state_config, "config file")->capture_default_str();
  state_check_cmd->add_flag("--json", state_json, "print one JSON object");
  auto state_salvage_cmd = state_cmd->add_subcommand(
    "salvage", "copy every readable record into a new state directory and report what was lost");
  std::string salvage_to;
  state_salvage_cmd->add_option("-c,--config", state_config, "config file")->capture_default_str();
  state_salvage_cmd->add_option("--to", salvage_to, "a new, empty directory")->required();
  state_salvage_cmd->add_flag("--json", state_json, "print one JSON object");

  auto reload_cmd = app.add_subcommand(
    "reload", "make the running daemon reload its config file; exit 78 if it refused it");
  std::string reload_config = lockbridge::defaults::config_file;
  reload_cmd->add_option("-c,--config", reload_config, "config file")->capture_default_str();

  app.add_subcommand("version", "print the version");
  app.set_version_flag("--version", std::string{"lockbridge "} + LOCKBRIDGE_VERSION);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    auto rc = app.exit(e);
    return rc == 0 ? exit_ok : exit_usage;
  }
  overrides = lockbridge::config::overrides_from_environment(environ);
  for (const auto& s : sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "lockbridge: --set " << s << ": expected section.key=value\n";
      return exit_usage;
    }
    auto key = s.substr(0, eq);
    overrides.push_back({key, s.substr(eq + 1), "command line --set " + key});
  }
  if (app.got_subcommand("version")) {
    std::cout << "lockbridge " << LOCKBRIDGE_VERSION << "\n";
    return exit_ok;
  }
  if (app.got_subcommand("check-config")) {
    auto cfg = load_config(check_file, false, lockbridge::config::load_purpose::check);
    if (!cfg)
      return exit_config;
    auto ble = std::count_if(cfg->locks.begin(), cfg->locks.end(), [](const auto& l) {
      return l.transport == lockbridge::config::lock_transport::ble;
    });
    std::cout << check_file << ": OK (site " << cfg->site << ", gateway " << cfg->gateway
              << ", " << cfg->locks.size() << " locks"
              << (ble > 0 ? ": " + std::to_string(cfg->locks.size() - static_cast<std::size_t>(ble))
                              + " CoAP, " + std::to_string(ble) + " BLE on " + cfg->ble.adapter
                          : std::string{})
              << ")\n";
    return exit_ok;
  }
  if (status_cmd->parsed())
    return show_status(status_config, status_json, false);
  if (doctor_cmd->parsed())
    return lockbridge::doctor::run(doctor_opts, overrides);
  if (locks_cmd->parsed())
    return show_status(status_config, status_json, true);
  if (log_level_cmd->parsed())
    return set_log_level(status_config, log_level_value, log_level_for);
  if (journal_stats_cmd->parsed())
    return journal_stats(journal_config, journal_json);
  if (provision_lock_cmd->parsed())
    return provision_lock(provision_id, provision_dir, provision_force, provision_ble);
  if (stats_cmd->parsed())
    return credentials_stats(stats_config, stats_json);
  if (reload_cmd->parsed())
    return reload_command(reload_config);
  if (state_check_cmd->parsed())
    return state_check(state_config, state_json);
  if (state_salvage_cmd->parsed())
    return state_salvage(state_config, salvage_to, state_json);
  if (audit_verify_cmd->parsed())
    return audit_verify(audit_config, audit_json);
  if (erase_cmd->parsed()) {
    nlohmann::json payload{{"schema", "lockbridge/erase-subject/1"}, {"subject", erase_subject}};
    if (!erase_id.empty())
      payload["id"] = erase_id;
    return local_command(erase_config, "erase_subject", payload, erase_json);
  }
  if (rotate_cmd->parsed()) {
    if (!rotate_epoch && !rotate_data) {
      std::cerr << "lockbridge: keys rotate: give --pseudonym-epoch and/or --data-key\n";
      return exit_usage;
    }
    nlohmann::json payload{{"schema", "lockbridge/rotate-keys/1"},
                           {"pseudonym_epoch", rotate_epoch},
                           {"data_key", rotate_data}};
    return local_command(rotate_config, "rotate_keys", payload, false);
  }
  return run(config_file, start_empty);
}
