#include "actors/coap_endpoint.hpp"

#include <caf/all.hpp>

#include "actors/failure.hpp"

namespace lockbridge {

coap_endpoint_actor::behavior_type
coap_endpoint(coap_endpoint_actor::stateful_pointer<coap_endpoint_state> self,
              std::shared_ptr<transport::lock_transport> server) {
  log_exceptions(self);
  self->state.server = std::move(server);
  self->state.server->start();
  return {
    [self](atom::restart) {
      self->state.server->stop();
      self->quit();
    },
  };
}

} // namespace lockbridge
