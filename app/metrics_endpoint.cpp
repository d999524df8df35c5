#include "metrics_endpoint.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <microhttpd.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "protocols/openmetrics.hpp"
#include "transports/port_probe.hpp"

namespace lockbridge {

namespace {

constexpr std::string_view openmetrics_type
  = "application/openmetrics-text; version=1.0.0; charset=utf-8";
constexpr std::string_view prometheus_type = "text/plain; version=0.0.4; charset=utf-8";

/// A TCP socket bound to `where` and listening, or an error naming the fix.
int listen_on(const config::listen_address& where) {
  auto name = where.host + ":" + std::to_string(where.port);
  auto addr = transport::socket_address_of(where);
  if (!addr)
    throw std::runtime_error{name + ": expected a numeric address"};
  int fd = ::socket(addr->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw std::runtime_error{"cannot create a TCP socket: " + std::string{std::strerror(errno)}};
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, addr->get(), addr->length) != 0 || ::listen(fd, 16) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EADDRINUSE) {
      auto holder = transport::port_holder(where.port, SOCK_STREAM);
      throw std::runtime_error{name + ": the TCP port is held by "
                               + (holder ? *holder : std::string{"another process"})
                               + " (`ss -tlpn 'sport = :" + std::to_string(where.port)
                               + "'` shows which); stop it, or choose another port"};
    }
    throw std::runtime_error{name + ": cannot listen there (" + std::strerror(err)
                             + "); is the address this machine's?"};
  }
  return fd;
}

MHD_Result on_request(void* cls, MHD_Connection* connection, const char* url, const char* method,
                      const char*, const char*, std::size_t* upload_size, void** state) noexcept {
  // The first call for a request only says it began.
  static int began;
  if (*state == nullptr) {
    *state = &began;
    return MHD_YES;
  }
  if (*upload_size != 0) {
    *upload_size = 0; // a body is read and dropped; the answer comes on the last call
    return MHD_YES;
  }
  try {
    auto self = static_cast<const metrics_endpoint*>(cls);
    const char* accept = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Accept");
    auto r = self->answer(method, url, accept != nullptr ? accept : "");
    auto* response = MHD_create_response_from_buffer(r.body.size(), r.body.data(),
                                                     MHD_RESPMEM_MUST_COPY);
    if (response == nullptr)
      return MHD_NO;
    MHD_add_response_header(response, "Content-Type", r.content_type.c_str());
    if (r.code == MHD_HTTP_METHOD_NOT_ALLOWED)
      MHD_add_response_header(response, "Allow", "GET, HEAD");
    auto ok = MHD_queue_response(connection, r.code, response);
    MHD_destroy_response(response);
    return ok;
  } catch (...) {
    return MHD_NO; // the connection is closed; the scraper retries
  }
}

} // namespace

metrics_endpoint::metrics_endpoint(const config::listen_address& where, provider status)
  : status_(std::move(status)) {
  int fd = listen_on(where);
  daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, nullptr, nullptr,
                             &on_request, this, MHD_OPTION_LISTEN_SOCKET, fd,
                             MHD_OPTION_CONNECTION_LIMIT, 8u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                             MHD_OPTION_END);
  if (daemon_ == nullptr) {
    ::close(fd);
    throw std::runtime_error{"cannot start the HTTP server on " + where.host + ":"
                             + std::to_string(where.port)};
  }
  auto host = where.host.find(':') != std::string::npos ? "[" + where.host + "]" : where.host;
  spdlog::info("metrics: serving http://{}:{}/metrics", host, where.port);
}

metrics_endpoint::~metrics_endpoint() {
  if (daemon_ != nullptr)
    MHD_stop_daemon(daemon_);
}

metrics_endpoint::reply metrics_endpoint::answer(std::string_view method, std::string_view path,
                                                 std::string_view accept) const {
  if (method != "GET" && method != "HEAD")
    return {MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET /metrics\n"};
  if (path != "/metrics")
    return {MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", "the metrics are at /metrics\n"};
  auto doc = nlohmann::json::parse(status_(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || doc.contains("error"))
    return {MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8",
            "the gateway is starting or restarting its actors; try again\n"};
  bool openmetrics = accept.find("application/openmetrics-text") != std::string_view::npos;
  return {MHD_HTTP_OK, std::string{openmetrics ? openmetrics_type : prometheus_type},
          protocol::render_metrics(doc, openmetrics)};
}

} // namespace lockbridge
