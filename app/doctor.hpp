#pragma once

// `lockbridge doctor`: what check-config checks, and what the machine must
// give the service: files as the service user sees them, the listening ports,
// the broker reached with the configured TLS files, the clock against the
// state's high-water mark, BlueZ when BLE locks exist, the free disk against
// the journal's bound. Each finding is OK, a warning or an error with its fix.

#include <string>
#include <vector>

#include "config/config.hpp"

namespace lockbridge::doctor {

enum class level { ok, warning, error };

struct finding {
  level severity = level::ok;
  std::string check;   ///< config, files, ports, broker, tls, clock, ble, disk
  std::string message;
  std::string fix;     ///< empty when there is nothing to do
};

struct options {
  std::string config_file;
  std::string user;    ///< the service user to check files as (root only); empty: "lockbridge"
  bool json = false;
};

/// Runs every check and prints the findings. Exit code by the worst one:
/// 0 all OK, 1 a warning, 2 an error.
int run(const options& opts, const std::vector<config::override_value>& overrides);

} // namespace lockbridge::doctor
