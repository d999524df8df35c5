#include "transports/tls_probe.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <memory>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config/config.hpp"

namespace lockbridge::transport {

namespace {

std::string openssl_errors() {
  std::string out;
  while (auto e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty())
      out += "; ";
    out += buf;
  }
  return out;
}

struct fd_closer {
  int fd;
  ~fd_closer() {
    if (fd >= 0)
      ::close(fd);
  }
};

} // namespace

std::string probe_tls(const std::string& broker_uri, const std::filesystem::path& ca,
                      const std::filesystem::path& cert, const std::filesystem::path& key,
                      int timeout_ms) {
  auto scheme = broker_uri.find("://");
  auto parts = config::split_host_port(
    std::string_view{broker_uri}.substr(scheme == std::string::npos ? 0 : scheme + 3));
  if (!parts || !parts->port || parts->port->empty())
    return "broker URI has no port: " + broker_uri;
  const auto& host = parts->host;
  const auto& port = *parts->port;

  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free};
  if (!ctx)
    return "OpenSSL: " + openssl_errors();
  if (SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1)
    return "cannot load CA file " + ca.string() + ": " + openssl_errors();
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1)
    return "cannot load client certificate " + cert.string() + ": " + openssl_errors();
  // A key behind a passphrase fails here; OpenSSL's default would ask for
  // it on the terminal.
  SSL_CTX_set_default_passwd_cb(ctx.get(), [](char*, int, int, void*) { return -1; });
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)
    return "cannot load client key " + key.string() + ": " + openssl_errors();
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return "client certificate " + cert.string() + " does not match key " + key.string();
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);

  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr)
    return "cannot resolve broker host " + host;
  fd_closer sock{::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(sock.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(sock.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int rc = ::connect(sock.fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0)
    return "cannot reach the broker at " + host + ":" + port + " (TCP connect failed)";

  std::unique_ptr<SSL, decltype(&SSL_free)> ssl{SSL_new(ctx.get()), SSL_free};
  SSL_set_fd(ssl.get(), sock.fd);
  SSL_set_tlsext_host_name(ssl.get(), host.c_str());
  // Verify the name as Paho does: an IP address against the certificate's IP
  // SANs, a host name against its DNS names.
  if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), host.c_str()) != 1)
    X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl.get()), host.c_str(), 0);
  if (SSL_connect(ssl.get()) != 1) {
    auto verify = SSL_get_verify_result(ssl.get());
    if (verify != X509_V_OK)
      return std::string{"broker certificate not trusted (certificate verify failed: "}
             + X509_verify_cert_error_string(verify) + "); check mqtt.ca_file";
    return "TLS handshake with the broker failed: " + openssl_errors()
           + "; the broker may not accept our client certificate (check mqtt.cert_file "
             "was issued by the broker's CA)";
  }
  // With TLS 1.3 the broker judges our certificate after the handshake: an
  // alert arrives on the first read.
  char byte;
  int n = SSL_read(ssl.get(), &byte, 1);
  if (n <= 0) {
    auto err = SSL_get_error(ssl.get(), n);
    if (err == SSL_ERROR_SSL) {
      return "broker refused our client certificate (" + openssl_errors()
             + "); check mqtt.cert_file was issued by the broker's CA";
    }
  }
  return {};
}

} // namespace lockbridge::transport
