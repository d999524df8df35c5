#include "store/vault.hpp"

#include <spdlog/spdlog.h>

#include "protocols/clock_guard.hpp"
#include "store/state_check.hpp"

namespace lockbridge::store {

void audit(vault& v, std::string_view action, nlohmann::json detail) {
  try {
    v.audit->append(protocol::unix_ms_now(), action, std::move(detail));
  } catch (const std::exception& e) {
    spdlog::error("audit: cannot record \"{}\": {}", action, e.what());
  }
}

std::shared_ptr<vault> open_vault(const std::filesystem::path& dir, std::uint64_t journal_max_bytes,
                                  const vault_keys& k, std::int64_t now_ms, bool exclusive,
                                  const std::optional<state_owner>& owner) {
  auto v = std::make_shared<vault>();
  v->env = std::make_shared<environment>(dir, map_size_for(journal_max_bytes), exclusive,
                                         owner && owner->start_empty);
  if (owner)
    bind_identity(*v->env, owner->site, owner->gateway, owner->start_empty, now_ms);
  v->keys = std::make_shared<keyring>(v->env, k.kek, k.previous_kek);
  v->events = std::make_shared<journal>(v->env, v->keys, journal_limits{journal_max_bytes});
  v->credentials = std::make_shared<credential_store>(v->env, v->keys, k.lookup);
  v->epochs = std::make_shared<epoch_store>(v->env, v->keys, now_ms);
  v->pseudonyms = std::make_shared<pseudonym_source>(v->epochs, k.lookup);
  v->audit = std::make_shared<audit_log>(v->env, v->keys);
  v->commands = std::make_shared<command_ids>(v->env);
  v->results = std::make_shared<outbox>(v->env, v->keys);
  return v;
}

} // namespace lockbridge::store
