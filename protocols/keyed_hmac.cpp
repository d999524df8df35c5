#include "protocols/keyed_hmac.hpp"

#include <openssl/evp.h>
#include <openssl/params.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace lockbridge::protocol {

/// OpenSSL 3's one-shot HMAC() fetches the algorithm and derives the key
/// schedule on every call; keying one context up front and duplicating it per
/// message does that work once.
struct keyed_hmac::prepared {
  std::mutex mutex; // EVP_MAC_CTX_dup reads the base; serialise to be safe
  EVP_MAC_CTX* base = nullptr;
  std::string domain;

  ~prepared() { EVP_MAC_CTX_free(base); }
};

keyed_hmac::keyed_hmac(const key_type& key, std::string_view domain)
  : prepared_(std::make_shared<prepared>()) {
  prepared_->domain.assign(domain);
  prepared_->domain.push_back('\0');
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> hmac{EVP_MAC_fetch(nullptr, "HMAC", nullptr),
                                                          &EVP_MAC_free};
  if (!hmac)
    throw std::runtime_error{"OpenSSL has no HMAC"};
  prepared_->base = EVP_MAC_CTX_new(hmac.get());
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                         OSSL_PARAM_construct_end()};
  if (prepared_->base == nullptr
      || EVP_MAC_init(prepared_->base, key.data(), key.size(), params) != 1)
    throw std::runtime_error{"HMAC-SHA-256 setup failed in OpenSSL"};
}

keyed_hmac::mac_type keyed_hmac::operator()(std::string_view message) const {
  EVP_MAC_CTX* ctx = nullptr;
  {
    std::lock_guard lock{prepared_->mutex};
    ctx = EVP_MAC_CTX_dup(prepared_->base);
  }
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> guard{ctx, &EVP_MAC_CTX_free};
  mac_type mac{};
  std::size_t mac_size = 0;
  const auto& domain = prepared_->domain;
  if (ctx == nullptr
      || EVP_MAC_update(ctx, reinterpret_cast<const std::uint8_t*>(domain.data()), domain.size())
           != 1
      || EVP_MAC_update(ctx, reinterpret_cast<const std::uint8_t*>(message.data()),
                        message.size())
           != 1
      || EVP_MAC_final(ctx, mac.data(), &mac_size, mac.size()) != 1 || mac_size != mac.size())
    throw std::runtime_error{"HMAC-SHA-256 failed in OpenSSL"};
  return mac;
}

} // namespace lockbridge::protocol
