#pragma once
// Mutual TLS for a Paho MQTT client: the CA that signs the broker, this
// client's certificate and key; the broker's certificate and host name are
// verified. Header-only, so that the gateway's link and the test and bench
// tools (which do not link the transports library) build their TLS the same
// way.

#include <string>

#include <mqtt/ssl_options.h>

namespace lockbridge::transport {

inline mqtt::ssl_options mutual_tls(const std::string& ca, const std::string& cert,
                                    const std::string& key) {
  mqtt::ssl_options ssl;
  ssl.set_trust_store(ca);
  ssl.set_key_store(cert);
  ssl.set_private_key(key);
  // Never a terminal prompt: without a password set, OpenSSL asks for a
  // protected key's passphrase on the terminal. This one never opens a key
  // (check-config and the gateway's start-up TLS check name such a key).
  ssl.set_private_key_password("\x01lockbridge never asks for a passphrase");
  ssl.set_enable_server_cert_auth(true);
  ssl.set_verify(true);
  return ssl;
}

} // namespace lockbridge::transport
