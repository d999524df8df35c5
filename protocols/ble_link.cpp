#include "protocols/ble_link.hpp"

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <stdexcept>

namespace lockbridge::protocol::ble {

namespace {

void put_be(bytes& out, std::uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i)
    out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

std::uint64_t get_be(std::span<const std::uint8_t> in, std::size_t at, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i)
    v = (v << 8) | in[at + static_cast<std::size_t>(i)];
  return v;
}

std::array<std::uint8_t, 12> iv_of(std::uint64_t counter) {
  std::array<std::uint8_t, 12> iv{};
  for (int i = 0; i < 8; ++i)
    iv[4 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(counter >> (8 * (7 - i)));
  return iv;
}

using cipher_ctx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

std::array<std::uint8_t, 32> hkdf(std::span<const std::uint8_t> ikm,
                                  std::span<const std::uint8_t> salt, const std::string& info) {
  std::unique_ptr<EVP_KDF, decltype(&EVP_KDF_free)> kdf{EVP_KDF_fetch(nullptr, "HKDF", nullptr),
                                                        &EVP_KDF_free};
  if (!kdf)
    throw std::runtime_error{"OpenSSL has no HKDF"};
  std::unique_ptr<EVP_KDF_CTX, decltype(&EVP_KDF_CTX_free)> ctx{EVP_KDF_CTX_new(kdf.get()),
                                                               &EVP_KDF_CTX_free};
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
    OSSL_PARAM_construct_utf8_string("digest", digest, 0),
    OSSL_PARAM_construct_octet_string("key", const_cast<std::uint8_t*>(ikm.data()), ikm.size()),
    OSSL_PARAM_construct_octet_string("salt", const_cast<std::uint8_t*>(salt.data()), salt.size()),
    OSSL_PARAM_construct_octet_string("info", const_cast<char*>(info.data()), info.size()),
    OSSL_PARAM_construct_end()};
  std::array<std::uint8_t, 32> out{};
  if (!ctx || EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1)
    throw std::runtime_error{"HKDF-SHA-256 failed in OpenSSL"};
  return out;
}

} // namespace

bool is_lock_kind(kind k) noexcept {
  auto v = static_cast<std::uint8_t>(k);
  return k == kind::hello_answer || (v >= 0x11 && v <= 0x16);
}

bool is_gateway_kind(kind k) noexcept {
  auto v = static_cast<std::uint8_t>(k);
  return k == kind::hello || (v >= 0x21 && v <= 0x25);
}

std::string_view to_string(kind k) noexcept {
  switch (k) {
  case kind::hello: return "hello";
  case kind::hello_answer: return "hello_answer";
  case kind::events: return "events";
  case kind::access: return "access";
  case kind::time_request: return "time_request";
  case kind::state: return "state";
  case kind::command_answer: return "command_answer";
  case kind::idle: return "idle";
  case kind::events_answer: return "events_answer";
  case kind::access_answer: return "access_answer";
  case kind::time_answer: return "time_answer";
  case kind::command: return "command";
  case kind::state_request: return "state_request";
  }
  return "unknown";
}

result<std::vector<bytes>> fragment(std::uint16_t msg_id, std::span<const std::uint8_t> message,
                                    std::size_t mtu) {
  if (mtu < 23 || mtu > 517)
    return input_error{"mtu", "expected an ATT MTU from 23 to 517, got " + std::to_string(mtu)};
  const std::size_t chunk = mtu - att_overhead_bytes - fragment_header_bytes;
  const std::size_t count = message.empty() ? 1 : (message.size() + chunk - 1) / chunk;
  if (count > max_fragments)
    return input_error{"message", "a message of " + std::to_string(message.size())
                                    + " bytes needs " + std::to_string(count)
                                    + " fragments at ATT MTU " + std::to_string(mtu)
                                    + "; at most 255"};
  std::vector<bytes> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    bytes f;
    auto first = i * chunk;
    auto n = std::min(chunk, message.size() - std::min(first, message.size()));
    f.reserve(fragment_header_bytes + n);
    put_be(f, msg_id, 2);
    f.push_back(static_cast<std::uint8_t>(i));
    f.push_back(static_cast<std::uint8_t>(count));
    f.insert(f.end(), message.begin() + static_cast<std::ptrdiff_t>(first),
             message.begin() + static_cast<std::ptrdiff_t>(first + n));
    out.push_back(std::move(f));
  }
  return out;
}

reassembler::outcome reassembler::add(std::span<const std::uint8_t> value, std::int64_t now_ms) {
  using what = outcome::what;
  if (value.size() < fragment_header_bytes)
    return {what::invalid, {}, "a fragment of " + std::to_string(value.size())
                                 + " bytes is shorter than its 4-byte header"};
  auto id = static_cast<std::uint16_t>(get_be(value, 0, 2));
  std::uint8_t index = value[2];
  std::uint8_t count = value[3];
  if (count == 0 || index >= count)
    return {what::invalid, {}, "fragment " + std::to_string(index) + " of "
                                 + std::to_string(count) + " is out of range"};
  auto chunk = value.subspan(fragment_header_bytes);
  if (count == 1)
    return {what::complete, bytes(chunk.begin(), chunk.end()), {}};
  auto it = partial_.find(id);
  if (it != partial_.end() && it->second.count != count) {
    // The same id with another count: a new message; the old one is lost.
    partial_.erase(it);
    it = partial_.end();
  }
  if (it == partial_.end()) {
    if (partial_.size() >= 4) {
      // Oldest first out: a lock that starts message after message without
      // finishing one cannot grow this without bound.
      auto oldest = partial_.begin();
      for (auto j = partial_.begin(); j != partial_.end(); ++j)
        if (j->second.first_ms < oldest->second.first_ms)
          oldest = j;
      partial_.erase(oldest);
    }
    part p;
    p.count = count;
    p.first_ms = now_ms;
    p.chunks.resize(count);
    it = partial_.emplace(id, std::move(p)).first;
  }
  auto& p = it->second;
  if (p.chunks[index])
    return {what::duplicate, {}, {}};
  std::size_t held = 0;
  for (const auto& c : p.chunks)
    held += c ? c->size() : 0;
  if (held + chunk.size() > max_message_bytes) {
    partial_.erase(it);
    return {what::invalid, {}, "message " + std::to_string(id) + " exceeds "
                                 + std::to_string(max_message_bytes) + " bytes"};
  }
  p.chunks[index] = bytes(chunk.begin(), chunk.end());
  if (++p.received < p.count)
    return {what::partial, {}, {}};
  bytes message;
  message.reserve(held + chunk.size());
  for (auto& c : p.chunks)
    message.insert(message.end(), c->begin(), c->end());
  partial_.erase(it);
  return {what::complete, std::move(message), {}};
}

std::size_t reassembler::expire(std::int64_t now_ms) {
  return std::erase_if(partial_,
                       [&](const auto& kv) { return now_ms - kv.second.first_ms >= timeout_ms_; });
}

session_keys derive_session_keys(std::span<const std::uint8_t> psk, std::string_view lock_id,
                                 std::span<const std::uint8_t, nonce_bytes> gateway_nonce,
                                 std::span<const std::uint8_t, nonce_bytes> lock_nonce) {
  bytes salt(gateway_nonce.begin(), gateway_nonce.end());
  salt.insert(salt.end(), lock_nonce.begin(), lock_nonce.end());
  session_keys k;
  k.to_lock = hkdf(psk, salt, "lockbridge-ble-v1 G " + std::string{lock_id});
  k.from_lock = hkdf(psk, salt, "lockbridge-ble-v1 L " + std::string{lock_id});
  return k;
}

bytes encode_hello(kind k, std::span<const std::uint8_t, nonce_bytes> nonce) {
  bytes out{version, static_cast<std::uint8_t>(k)};
  out.insert(out.end(), nonce.begin(), nonce.end());
  return out;
}

bytes seal(const std::array<std::uint8_t, 32>& key, kind k, std::uint64_t counter,
           std::span<const std::uint8_t> body) {
  bytes out{version, static_cast<std::uint8_t>(k)};
  put_be(out, counter, 8);
  auto iv = iv_of(counter);
  cipher_ctx ctx{EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free};
  int n = 0;
  out.resize(header_bytes + body.size() + tag_bytes);
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), iv.data()) != 1
      || EVP_EncryptUpdate(ctx.get(), nullptr, &n, out.data(), static_cast<int>(header_bytes)) != 1
      || EVP_EncryptUpdate(ctx.get(), out.data() + header_bytes, &n, body.data(),
                           static_cast<int>(body.size()))
           != 1
      || EVP_EncryptFinal_ex(ctx.get(), out.data() + header_bytes + n, &n) != 1
      || EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag_bytes),
                             out.data() + header_bytes + body.size())
           != 1)
    throw std::runtime_error{"AES-256-GCM sealing failed in OpenSSL"};
  return out;
}

result<opened> peek(std::span<const std::uint8_t> message) {
  if (message.size() < 2)
    return input_error{"message", "shorter than its header"};
  if (message[0] != version)
    return input_error{"version", "expected 1, got " + std::to_string(message[0])};
  auto k = static_cast<kind>(message[1]);
  if (!is_lock_kind(k) && !is_gateway_kind(k))
    return input_error{"kind", "unknown message kind " + std::to_string(message[1])};
  opened o;
  o.what = k;
  if (k == kind::hello || k == kind::hello_answer) {
    if (message.size() != 2 + nonce_bytes)
      return input_error{"nonce", "a hello carries 16 bytes of nonce, got "
                                    + std::to_string(message.size() - 2)};
    o.body.assign(message.begin() + 2, message.end());
    return o;
  }
  if (message.size() < header_bytes + tag_bytes)
    return input_error{"message", "a sealed message of " + std::to_string(message.size())
                                    + " bytes is shorter than its header and tag"};
  o.counter = get_be(message, 2, 8);
  return o;
}

result<opened> open(const std::array<std::uint8_t, 32>& key,
                    std::span<const std::uint8_t> message) {
  auto head = peek(message);
  if (!head)
    return head;
  if (head->what == kind::hello || head->what == kind::hello_answer)
    return input_error{"kind", "a hello is not sealed"};
  auto iv = iv_of(head->counter);
  auto ct = message.subspan(header_bytes, message.size() - header_bytes - tag_bytes);
  bytes tag(message.end() - static_cast<std::ptrdiff_t>(tag_bytes), message.end());
  cipher_ctx ctx{EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free};
  head->body.resize(ct.size());
  int n = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), iv.data()) != 1
      || EVP_DecryptUpdate(ctx.get(), nullptr, &n, message.data(), static_cast<int>(header_bytes))
           != 1
      || EVP_DecryptUpdate(ctx.get(), head->body.data(), &n, ct.data(), static_cast<int>(ct.size()))
           != 1
      || EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag_bytes),
                             tag.data())
           != 1
      || EVP_DecryptFinal_ex(ctx.get(), head->body.data() + n, &n) != 1)
    return input_error{"tag", "the message does not authenticate under the lock's key"};
  return head;
}

bytes encode_answer(const answer& a) {
  bytes out;
  out.reserve(10 + a.payload.size());
  put_be(out, a.re, 8);
  put_be(out, a.code, 2);
  out.insert(out.end(), a.payload.begin(), a.payload.end());
  return out;
}

bytes encode_retry_after(std::uint32_t seconds) {
  return nlohmann::json::to_cbor(nlohmann::json{{"retry_after_s", seconds}});
}

result<answer> decode_answer(std::span<const std::uint8_t> body) {
  if (body.size() < 10)
    return input_error{"answer", "expected at least 10 bytes (re, code), got "
                                   + std::to_string(body.size())};
  answer a;
  a.re = get_be(body, 0, 8);
  a.code = static_cast<std::uint16_t>(get_be(body, 8, 2));
  if (a.code < 200 || a.code > 599)
    return input_error{"code", "expected a CoAP-style code from 200 to 599, got "
                                 + std::to_string(a.code)};
  a.payload.assign(body.begin() + 10, body.end());
  return a;
}

} // namespace lockbridge::protocol::ble
