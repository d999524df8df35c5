#pragma once

// Listening ports before they are listened on: whether one is free, and if
// not, which process holds it (for a start that refuses it and for `doctor`).

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>

#include "config/config.hpp"

namespace lockbridge::transport {

/// A numeric listen address as a socket address; nothing if not numeric.
struct socket_address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  [[nodiscard]] const sockaddr* get() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
};
std::optional<socket_address> socket_address_of(const config::listen_address& a);

/// Binds `a` without SO_REUSEADDR (with which Linux lets two processes
/// share a UDP port) and lets go at once: 0 if the port is free, else the
/// errno (EADDRINUSE: held; EADDRNOTAVAIL: not this machine's address).
int try_bind(const config::listen_address& a, int type /* SOCK_DGRAM or SOCK_STREAM */);

/// Which process holds the local `port` ("lockbridge (pid 1234)"), from
/// /proc; nothing if it cannot be told (another user's process without
/// privileges, or a process in another namespace).
std::optional<std::string> port_holder(std::uint16_t port, int type);

} // namespace lockbridge::transport
