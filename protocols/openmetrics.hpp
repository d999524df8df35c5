#pragma once

// The gateway's figures in the OpenMetrics text format (Prometheus' text
// format 0.0.4 when the scraper does not ask for OpenMetrics), made from the
// daemon's local status document. The names are documented in
// docs/operations.md, "Metrics".

#include <string>

#include <nlohmann/json.hpp>

namespace lockbridge::protocol {

/// Every metric the status document `doc` has figures for. `openmetrics`:
/// counters' TYPE lines name the family without `_total` and the text ends
/// with "# EOF"; otherwise Prometheus' 0.0.4 text format.
std::string render_metrics(const nlohmann::json& doc, bool openmetrics);

/// A label value as the formats want it: backslash, quote and newline escaped.
std::string escape_label(std::string_view value);

} // namespace lockbridge::protocol
