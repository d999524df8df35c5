#include "actors/commands.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/failure.hpp"

#include "actors/error.hpp"
#include "actors/results.hpp"
#include "protocols/clock_guard.hpp"
#include "protocols/json_input.hpp"

namespace lockbridge {

using protocol::unix_ms_now;

caf::error validate(const commands_config& cfg) {
  if (!cfg.vault || !cfg.server || !cfg.is_lock || !cfg.publish_result)
    return caf::make_error(ec::config_invalid,
                           "commands needs the vault, the lock transports, the lock list and a "
                           "result sink");
  return caf::none;
}

void commands_state::on_command(commands_actor::pointer self, const std::string& payload) {
  protocol::command_result r;
  r.command = "lock";
  r.ts = unix_ms_now();
  auto refuse = [&](input_error e, const std::string& lock) {
    r.status = "error";
    r.error = std::move(e);
    r.detail = "nothing was sent to any lock";
    spdlog::warn("commands: lock command {} refused: {}: {}", r.id.empty() ? "(no id)" : r.id,
                 r.error->field, r.error->message);
    audit(*cfg.vault, "lock_command",
          {{"command", r.id}, {"lock", lock}, {"outcome", "refused"}, {"field", r.error->field},
           {"reason", r.error->message}});
    cfg.publish_result(keep_reply(cfg.vault.get(), "commands", cfg.site, cfg.gateway, r));
  };
  auto c = protocol::decode_lock_command(payload);
  if (!c) {
    r.id = protocol::command_id_of(payload).value_or(""); // the result still names it
    refuse(c.error(), "");
    return;
  }
  r.id = c->id;
  if (!cfg.is_lock(c->lock)) {
    refuse({"lock", "no lock \"" + c->lock + "\" is configured on this gateway"}, c->lock);
    return;
  }
  auto now = unix_ms_now();
  if (c->expires_at <= now) {
    refuse({"expires_at", "the command expired " + std::to_string((now - c->expires_at) / 1000)
                            + " s ago (gateway clock)"},
           c->lock);
    return;
  }
  if (c->expires_at - now > protocol::lock_command_limits::max_lifetime_ms) {
    refuse({"expires_at", "more than "
                            + std::to_string(protocol::lock_command_limits::max_lifetime_ms / 60000)
                            + " minutes ahead; a lock command must be short-lived"},
           c->lock);
    return;
  }
  auto request = protocol::encode_lock_request(*c);
  try {
    // Durable with the command itself: a restart sends it again or answers it.
    if (!cfg.vault->commands->remember(c->id, c->expires_at, c->lock, request)) {
      refuse({"id", "command id already seen (a replay); each command needs a new id"}, c->lock);
      return;
    }
  } catch (const std::exception& e) {
    refuse({"", std::string{"cannot record the command id: "} + e.what()}, c->lock);
    return;
  }
  spdlog::info("commands: {} to lock {} ({}), expires in {} s", to_string(c->op), c->lock, c->id,
               (c->expires_at - now) / 1000);
  send(self, *c, std::move(request));
}

void commands_state::send(commands_actor::pointer self, const protocol::lock_command& c,
                          std::vector<std::uint8_t> request) {
  auto now = unix_ms_now();
  in_flight.emplace(c.id, c);
  auto deadline = std::chrono::steady_clock::now()
                  + std::chrono::milliseconds{std::max<std::int64_t>(0, c.expires_at - now)};
  auto target = caf::actor_cast<commands_actor>(self);
  auto report = [target, id = c.id](transport::command_outcome out) {
    auto done = std::make_shared<const lock_command_done>(lock_command_done{id, std::move(out)});
    caf::anon_send(target, atom::result_v, lock_command_done_ptr{std::move(done)});
  };
  cfg.server->send_command(c.lock, std::move(request), deadline, report);
}

void commands_state::answer(const protocol::command_result& r, const std::string& id) {
  cfg.publish_result(keep_reply(cfg.vault.get(), "commands", cfg.site, cfg.gateway, r, id));
}

void commands_state::resume(commands_actor::pointer self) {
  std::vector<store::command_ids::unanswered_command> waiting;
  try {
    waiting = cfg.vault->commands->unanswered();
  } catch (const std::exception& e) {
    spdlog::error("commands: cannot read the commands accepted before the restart: {}", e.what());
    return;
  }
  auto now = unix_ms_now();
  for (auto& u : waiting) {
    auto decoded = protocol::decode_lock_request(u.request);
    protocol::command_result r;
    r.command = "lock";
    r.id = u.id;
    r.ts = now;
    r.status = "failed";
    if (!decoded) {
      r.detail = "the gateway restarted while this command was in flight, and its stored copy "
                 "does not decode (" + decoded.error().to_string() + "); it was not sent again";
    } else if (u.expires_at <= now) {
      r.detail = "the gateway restarted while this command was in flight, and it expired before "
                 "it could be sent again; whether the lock acted before the restart shows in "
                 "its events and state";
    } else if (!cfg.is_lock(u.lock)) {
      r.detail = "the gateway restarted while this command was in flight, and lock " + u.lock
                 + " is no longer configured; it was not sent again";
    } else {
      auto c = *decoded;
      c.lock = u.lock;
      spdlog::info("commands: {} to lock {} ({}) accepted before the restart: sent again, "
                   "expires in {} s",
                   to_string(c.op), c.lock, c.id, (c.expires_at - now) / 1000);
      send(self, c, std::move(u.request));
      continue;
    }
    spdlog::warn("commands: command {} to lock {}: {}", u.id, u.lock, r.detail);
    audit(*cfg.vault, "lock_command",
          {{"command", u.id}, {"lock", u.lock}, {"outcome", "failed"}, {"reason", r.detail}});
    answer(r, u.id);
  }
}

void commands_state::on_done(const lock_command_done& done) {
  auto it = in_flight.find(done.id);
  if (it == in_flight.end())
    return;
  auto c = std::move(it->second);
  in_flight.erase(it);
  protocol::command_result r;
  r.command = "lock";
  r.id = c.id;
  r.ts = unix_ms_now();
  const auto& o = done.outcome;
  using kind = transport::command_outcome::kind;
  if (o.result == kind::not_connected) {
    r.status = "timeout";
    r.detail = "lock " + c.lock + " did not connect before the command expired; nothing was sent";
  } else if (o.result == kind::no_answer) {
    r.status = "timeout";
    r.detail = "no answer from lock " + c.lock + " within the command's lifetime (sent "
               + std::to_string(o.attempts) + " times, each retransmitted by CoAP)";
  } else if (o.code / 100 != 2) {
    r.status = "failed";
    r.detail = "the lock answered " + std::to_string(o.code / 100) + "."
               + (o.code % 100 < 10 ? "0" : "") + std::to_string(o.code % 100);
  } else if (auto a = protocol::decode_lock_answer(o.payload); !a || a->id != c.id) {
    r.status = "failed";
    r.detail = "the lock's answer is not valid: "
               + (a ? std::string{"it names another command"} : a.error().to_string());
  } else {
    r.status = a->result == "done" ? "ok" : a->result;
    r.detail = a->detail.value_or(a->result == "done" ? "done" : "");
  }
  r.receipt = protocol::dump_safe(
    nlohmann::json{{"lock", c.lock}, {"op", to_string(c.op)}, {"attempts", o.attempts}});
  spdlog::info("commands: {} to lock {} ({}): {}{}{}", to_string(c.op), c.lock, c.id, r.status,
               r.detail.empty() ? "" : ": ", r.detail);
  audit(*cfg.vault, "lock_command",
        {{"command", c.id}, {"lock", c.lock}, {"op", to_string(c.op)}, {"outcome", r.status},
         {"attempts", o.attempts}});
  answer(r, c.id);
}

commands_actor::behavior_type commands(commands_actor::stateful_pointer<commands_state> self,
                                       commands_config cfg) {
  log_exceptions(self);
  self->state.cfg = std::move(cfg);
  self->state.resume(self);
  return {
    [self](atom::command, const std::string&, const std::string& payload) {
      self->state.on_command(self, payload);
    },
    [self](atom::result, const lock_command_done_ptr& done) { self->state.on_done(*done); },
  };
}

} // namespace lockbridge
