#pragma once

#include <memory>

#include <caf/stateful_actor.hpp>

#include "actors/interfaces.hpp"
#include "transports/lock_transport.hpp"

namespace lockbridge {

struct coap_endpoint_state {
  static inline const char* name = "coap_endpoint";

  std::shared_ptr<transport::lock_transport> server;

  ~coap_endpoint_state() {
    if (server)
      server->stop();
  }
};

/// Owns the lock transports' loops (CoAP, BLE): starts them when spawned, stops them when it ends.
/// The server itself is built (and its ports bound) by the supervisor, so that
/// a listener that cannot bind fails the start with a clear message.
coap_endpoint_actor::behavior_type
coap_endpoint(coap_endpoint_actor::stateful_pointer<coap_endpoint_state> self,
              std::shared_ptr<transport::lock_transport> server);

} // namespace lockbridge
