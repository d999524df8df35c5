#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

/// Every key of the config file, declared once with what a reload does with
/// it. The reader accepts exactly these keys (anything else is "unknown"),
/// and a reload compares exactly these: a key cannot be added to one and
/// forgotten in the other.
namespace lockbridge::config {

struct gateway_config;

/// What a reload (SIGHUP, `lockbridge reload`) does with a changed key.
enum class on_reload {
  applied,       ///< taken at once
  needs_restart, ///< reported by name; the running value stays until a restart
};

struct key_rule {
  std::string_view section; ///< a top-level table, or "locks"/"doors" for an entry's key
  std::string_view key;
  on_reload reload;
};

/// The whole table, in the file's order of sections.
std::span<const key_rule> key_rules() noexcept;

/// The keys of one section ("gateway", "locks", ...), in the table's order.
std::vector<std::string_view> keys_of(std::string_view section);

/// The top-level sections, in the table's order.
std::vector<std::string_view> sections();

/// What a reload from `running` to `next` changes, by key ("mqtt.keepalive_s";
/// "locks" and "doors" for the entry lists as a whole).
struct reload_plan {
  std::vector<std::string> applied;
  std::vector<std::string> needs_restart;
};
reload_plan plan_reload(const gateway_config& running, const gateway_config& next);

/// Copies into `running` what a reload applies from `next` (the keys the
/// table marks `applied`); everything else of `running` stays.
void apply_reloadable(gateway_config& running, const gateway_config& next);

} // namespace lockbridge::config
