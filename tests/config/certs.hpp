#pragma once
// Certificates made at test time (OpenSSL): nothing secret is kept in the
// repository.

#include <string>
#include <utility>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace lockbridge::test {

/// A self-signed P-256 certificate and its key, valid from `from_days` to
/// `to_days` around now (OpenSSL, made at test time), as PEM text.
inline std::pair<std::string, std::string> make_cert(long from_days = -1, long to_days = 30,
                                                     const std::string& passphrase = {},
                                                     const std::string& cn = "gw-1",
                                                     const char* extended_key_usage = nullptr) {
  auto key = EVP_EC_gen("P-256");
  auto cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), from_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert), to_days * 86400);
  X509_set_pubkey(cert, key);
  auto name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  if (extended_key_usage != nullptr) {
    auto ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_ext_key_usage, extended_key_usage);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(cert, key, EVP_sha256());
  auto pem = [](auto write) {
    auto bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    auto len = BIO_get_mem_data(bio, &data);
    std::string text(data, static_cast<std::size_t>(len));
    BIO_free(bio);
    return text;
  };
  auto cert_pem = pem([&](BIO* b) { PEM_write_bio_X509(b, cert); });
  auto key_pem = pem([&](BIO* b) {
    if (passphrase.empty())
      PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
    else
      PEM_write_bio_PrivateKey(b, key, EVP_aes_256_cbc(),
                               reinterpret_cast<const unsigned char*>(passphrase.data()),
                               static_cast<int>(passphrase.size()), nullptr, nullptr);
  });
  X509_free(cert);
  EVP_PKEY_free(key);
  return {cert_pem, key_pem};
}

} // namespace lockbridge::test
