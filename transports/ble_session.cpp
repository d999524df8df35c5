#include "transports/ble_session.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <stdexcept>

#include <spdlog/fmt/fmt.h>

namespace lockbridge::transport {

namespace ble = protocol::ble;

ble::bytes ble_session::hello() {
  end();
  if (RAND_bytes(gateway_nonce_.data(), static_cast<int>(gateway_nonce_.size())) != 1)
    throw std::runtime_error{"ble: the random source failed (no hello nonce)"};
  stage_ = stage::hello_sent;
  return ble::encode_hello(ble::kind::hello, gateway_nonce_);
}

void ble_session::end() {
  if (keys_) {
    OPENSSL_cleanse(keys_->to_lock.data(), keys_->to_lock.size());
    OPENSSL_cleanse(keys_->from_lock.data(), keys_->from_lock.size());
    keys_.reset();
  }
  stage_ = stage::none;
  send_counter_ = 0;
  recv_counter_ = 0;
}

ble_session::verdict ble_session::accept(std::span<const std::uint8_t> psk,
                                         std::string_view lock_id,
                                         std::span<const std::uint8_t> message) {
  auto refuse = [](verdict_kind k, std::string why) {
    return verdict{k, std::nullopt, std::move(why)};
  };
  auto head = ble::peek(message);
  if (!head)
    return refuse(verdict_kind::forged,
                  fmt::format("a BLE message that is not protocol v1 ({}); refused",
                              head.error().to_string()));
  if (!ble::is_lock_kind(head->what))
    return refuse(verdict_kind::forged,
                  fmt::format("a BLE message of kind {} that only the gateway sends; refused",
                              ble::to_string(head->what)));
  if (head->what == ble::kind::hello_answer) {
    if (stage_ != stage::hello_sent)
      return refuse(verdict_kind::forged, "a BLE hello answer outside a handshake; refused");
    std::array<std::uint8_t, ble::nonce_bytes> lock_nonce{};
    std::copy_n(head->body.begin(), std::min(head->body.size(), lock_nonce.size()),
                lock_nonce.begin()); // peek checked its size
    keys_ = ble::derive_session_keys(psk, lock_id, gateway_nonce_, lock_nonce);
    stage_ = stage::established;
    send_counter_ = 0;
    recv_counter_ = 0;
    return {verdict_kind::established, std::nullopt, {}};
  }
  if (stage_ != stage::established || !keys_)
    return refuse(verdict_kind::forged, "a sealed BLE message before the handshake; refused");
  auto opened = ble::open(keys_->from_lock, message);
  if (!opened)
    return refuse(verdict_kind::forged,
                  fmt::format("a BLE {} message that does not authenticate under the lock's key "
                              "(forged or corrupted); refused, nothing stored",
                              ble::to_string(head->what)));
  if (opened->counter <= recv_counter_)
    return refuse(verdict_kind::replayed,
                  fmt::format("a replayed BLE {} message (counter {}, last {}); refused, nothing "
                              "stored",
                              ble::to_string(opened->what), opened->counter, recv_counter_));
  recv_counter_ = opened->counter;
  return {verdict_kind::authentic, std::move(*opened), {}};
}

std::optional<ble::bytes> ble_session::seal(ble::kind k, std::span<const std::uint8_t> body) {
  if (!keys_)
    return std::nullopt;
  return ble::seal(keys_->to_lock, k, ++send_counter_, body);
}

} // namespace lockbridge::transport
