#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace lockbridge::config {

/// One problem with the TLS files: which of them ("ca_file", "cert_file",
/// "key_file") and what is wrong, said so an installer can fix it.
struct tls_problem {
  std::string which;
  std::string message;
};

/// Checks that the CA file and the client certificate parse as PEM
/// certificates, that the key parses and belongs to the certificate, and that
/// the certificate is valid now. Never prints key material.
std::vector<tls_problem> check_tls_files(const std::filesystem::path& ca_file,
                                         const std::filesystem::path& cert_file,
                                         const std::filesystem::path& key_file);

/// The subject's common name of the PEM certificate in `cert_file`, if it parses and has one.
std::optional<std::string> certificate_common_name(const std::filesystem::path& cert_file);

/// When the PEM certificate in `cert_file` expires (Unix seconds), if it parses.
std::optional<std::int64_t> certificate_not_after(const std::filesystem::path& cert_file);

} // namespace lockbridge::config
