#pragma once

// `[metrics] listen`: an HTTP endpoint that answers GET /metrics with the
// gateway's figures in the OpenMetrics text format (libmicrohttpd on its
// own thread). Kept free of CAF.

#include <functional>
#include <string>

#include "config/config.hpp"

struct MHD_Daemon;

namespace lockbridge {

class metrics_endpoint {
public:
  /// The status document (JSON text) to render; runs on the endpoint's
  /// thread, one scrape at a time.
  using provider = std::function<std::string()>;

  /// Binds `where` (TCP) and starts answering. Throws std::runtime_error
  /// saying why if it cannot (the port is held, the address is not this
  /// machine's).
  metrics_endpoint(const config::listen_address& where, provider status);
  ~metrics_endpoint();
  metrics_endpoint(const metrics_endpoint&) = delete;
  metrics_endpoint& operator=(const metrics_endpoint&) = delete;

  /// Answers one request (method, path, Accept header): HTTP status,
  /// content type and body. Public for the daemon's tests of the routing.
  struct reply {
    unsigned code;
    std::string content_type;
    std::string body;
  };
  reply answer(std::string_view method, std::string_view path, std::string_view accept) const;

private:
  provider status_;
  MHD_Daemon* daemon_ = nullptr;
};

} // namespace lockbridge
