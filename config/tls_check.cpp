#include "config/tls_check.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>

namespace lockbridge::config {

namespace {

using bio_ptr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using x509_ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

x509_ptr read_cert(const std::filesystem::path& file) {
  bio_ptr in{BIO_new_file(file.c_str(), "r"), &BIO_free};
  if (!in)
    return {nullptr, &X509_free};
  return {PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr), &X509_free};
}

std::string when(const ASN1_TIME* t) {
  std::unique_ptr<BIO, decltype(&BIO_free)> out{BIO_new(BIO_s_mem()), &BIO_free};
  ASN1_TIME_print(out.get(), t);
  char* data = nullptr;
  auto len = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

/// OpenSSL's passphrase callback for keys lockbridge reads: never asks
/// (OpenSSL's default reads one from the terminal), notes that a
/// passphrase was wanted.
int refuse_passphrase(char*, int, int, void* wanted) {
  *static_cast<bool*>(wanted) = true;
  return -1;
}

} // namespace

std::vector<tls_problem> check_tls_files(const std::filesystem::path& ca_file,
                                         const std::filesystem::path& cert_file,
                                         const std::filesystem::path& key_file) {
  std::vector<tls_problem> problems;
  if (!read_cert(ca_file))
    problems.push_back({"ca_file", "is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"});
  auto cert = read_cert(cert_file);
  if (!cert)
    problems.push_back({"cert_file", "is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"});
  pkey_ptr key{nullptr, &EVP_PKEY_free};
  bool passphrase_wanted = false;
  {
    bio_ptr in{BIO_new_file(key_file.c_str(), "r"), &BIO_free};
    if (in)
      key.reset(PEM_read_bio_PrivateKey(in.get(), nullptr, &refuse_passphrase, &passphrase_wanted));
  }
  if (!key && passphrase_wanted)
    problems.push_back({"key_file", "is protected by a passphrase, which lockbridge never asks "
                                    "for (it runs unattended); store the key without one, "
                                    "readable by the service only: openssl pkey -in KEY -out "
                                    "KEY.plain, then chmod 0640 and chown root:lockbridge"});
  else if (!key)
    problems.push_back({"key_file", "is not an unencrypted PEM private key"});
  ERR_clear_error();
  if (cert) {
    if (key && X509_check_private_key(cert.get(), key.get()) != 1)
      problems.push_back({"key_file", "does not belong to mqtt.cert_file (the certificate's public "
                                      "key differs); use the key the certificate was issued for"});
    // An extended key usage that leaves out clientAuth (a server's
    // certificate) is refused by the broker in the handshake.
    if ((X509_get_extension_flags(cert.get()) & EXFLAG_XKUSAGE) != 0
        && (X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT) == 0)
      problems.push_back({"cert_file", "is not for TLS clients (its extended key usage leaves out "
                                       "clientAuth, as a server's certificate does); the broker "
                                       "refuses it: have one issued with extendedKeyUsage = "
                                       "clientAuth"});
    if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) <= 0)
      problems.push_back({"cert_file", "expired on " + when(X509_get0_notAfter(cert.get()))
                                         + "; have a new one issued"});
    if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) >= 0)
      problems.push_back({"cert_file", "is not valid before "
                                         + when(X509_get0_notBefore(cert.get()))
                                         + " (check this machine's clock)"});
  }
  ERR_clear_error();
  return problems;
}

std::optional<std::string> certificate_common_name(const std::filesystem::path& cert_file) {
  auto cert = read_cert(cert_file);
  if (!cert)
    return std::nullopt;
  char cn[256] = {0};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn,
                                    sizeof cn);
  ERR_clear_error();
  if (n < 0)
    return std::nullopt;
  return std::string(cn, static_cast<std::size_t>(n));
}

std::optional<std::int64_t> certificate_not_after(const std::filesystem::path& cert_file) {
  auto cert = read_cert(cert_file);
  if (!cert)
    return std::nullopt;
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1)
    return std::nullopt;
  return static_cast<std::int64_t>(::timegm(&tm));
}

} // namespace lockbridge::config
