#pragma once

#include <filesystem>
#include <string>

namespace lockbridge::transport {

/// Explains why a TLS connection to an MQTT broker fails, in words an
/// installer can act on ("broker certificate not trusted: unable to get local
/// issuer certificate", "broker refused our client certificate: unknown ca").
/// Paho reports only "connect failed"; the uplink calls this on the first
/// failure of a streak. Blocks for at most about `timeout_ms` twice.
/// Returns an empty string if a mutual-TLS handshake succeeds.
std::string probe_tls(const std::string& broker_uri, const std::filesystem::path& ca,
                      const std::filesystem::path& cert, const std::filesystem::path& key,
                      int timeout_ms = 2000);

} // namespace lockbridge::transport
