#include "protocols/pseudonym.hpp"

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <stdexcept>

namespace lockbridge::protocol {

namespace {

/// Domain separation: the same key must never yield the same output for a
/// credential pseudonym and for any other use of HMAC in lockbridge.
constexpr std::string_view domain = "lockbridge/credential-pseudonym/v1";

} // namespace

std::string base64url(const std::uint8_t* data, std::size_t size) {
  static constexpr char alphabet[]
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((size * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= size; i += 3) {
    std::uint32_t v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (size - i == 1) {
    std::uint32_t v = data[i] << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
  } else if (size - i == 2) {
    std::uint32_t v = (data[i] << 16) | (data[i + 1] << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
  }
  return out;
}

/// OpenSSL 3's one-shot HMAC() fetches the algorithm and derives the key
/// schedule on every call; keying one context up front and duplicating it per
/// pseudonym does that work once.
struct pseudonymiser::keyed_mac {
  std::mutex mutex; // EVP_MAC_CTX_dup reads the base; serialise to be safe
  EVP_MAC_CTX* base = nullptr;

  ~keyed_mac() { EVP_MAC_CTX_free(base); }
};

pseudonymiser::pseudonymiser(const key_type& key, std::uint32_t epoch)
  : mac_(std::make_shared<keyed_mac>()), epoch_(epoch) {
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> hmac{EVP_MAC_fetch(nullptr, "HMAC", nullptr),
                                                          &EVP_MAC_free};
  if (!hmac)
    throw std::runtime_error{"OpenSSL has no HMAC"};
  mac_->base = EVP_MAC_CTX_new(hmac.get());
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                         OSSL_PARAM_construct_end()};
  if (mac_->base == nullptr || EVP_MAC_init(mac_->base, key.data(), key.size(), params) != 1)
    throw std::runtime_error{"HMAC-SHA-256 setup failed in OpenSSL"};
}

std::string pseudonymiser::operator()(std::string_view identifier) const {
  EVP_MAC_CTX* ctx = nullptr;
  {
    std::lock_guard lock{mac_->mutex};
    ctx = EVP_MAC_CTX_dup(mac_->base);
  }
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> guard{ctx, &EVP_MAC_CTX_free};
  static constexpr std::uint8_t separator = 0;
  std::array<std::uint8_t, EVP_MAX_MD_SIZE> mac{};
  std::size_t mac_size = 0;
  if (ctx == nullptr
      || EVP_MAC_update(ctx, reinterpret_cast<const std::uint8_t*>(domain.data()), domain.size())
           != 1
      || EVP_MAC_update(ctx, &separator, 1) != 1
      || EVP_MAC_update(ctx, reinterpret_cast<const std::uint8_t*>(identifier.data()),
                        identifier.size())
           != 1
      || EVP_MAC_final(ctx, mac.data(), &mac_size, mac.size()) != 1)
    throw std::runtime_error{"HMAC-SHA-256 failed in OpenSSL"};
  return "p1." + std::to_string(epoch_) + "." + base64url(mac.data(), mac_size);
}

bool is_pseudonym(std::string_view text) {
  if (!text.starts_with("p1."))
    return false;
  text.remove_prefix(3);
  auto dot = text.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 10)
    return false;
  if (!std::all_of(text.begin(), text.begin() + dot, [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  auto mac = text.substr(dot + 1);
  return mac.size() == 43 && std::all_of(mac.begin(), mac.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9') || c == '-' || c == '_';
         });
}

} // namespace lockbridge::protocol
