#include "transports/port_probe.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace lockbridge::transport {

std::optional<socket_address> socket_address_of(const config::listen_address& a) {
  socket_address out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (::inet_pton(AF_INET, a.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(a.port);
    out.length = sizeof *v4;
  } else if (::inet_pton(AF_INET6, a.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(a.port);
    out.length = sizeof *v6;
  } else {
    return std::nullopt;
  }
  return out;
}

int try_bind(const config::listen_address& a, int type) {
  auto addr = socket_address_of(a);
  if (!addr)
    return EINVAL;
  int fd = ::socket(addr->storage.ss_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return errno;
  int rc = ::bind(fd, addr->get(), addr->length);
  int err = rc == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

namespace {

/// The socket inodes bound to local `port` in one of /proc/net/{udp,tcp}{,6}.
void inodes_on(const char* table, std::uint16_t port, bool listening_only,
               std::set<std::string>& out) {
  std::ifstream in{table};
  std::string line;
  std::getline(in, line); // header
  while (std::getline(in, line)) {
    std::istringstream fields{line};
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid
      >> timeout >> inode;
    auto colon = local.rfind(':');
    if (colon == std::string::npos)
      continue;
    unsigned value = 0;
    auto hex = local.substr(colon + 1);
    std::from_chars(hex.data(), hex.data() + hex.size(), value, 16);
    // TCP: only a listener (state 0A) holds a port for bind.
    if (value == port && (!listening_only || state == "0A"))
      out.insert("socket:[" + inode + "]");
  }
}

} // namespace

std::optional<std::string> port_holder(std::uint16_t port, int type) {
  std::set<std::string> inodes;
  bool udp = type == SOCK_DGRAM;
  inodes_on(udp ? "/proc/net/udp" : "/proc/net/tcp", port, !udp, inodes);
  inodes_on(udp ? "/proc/net/udp6" : "/proc/net/tcp6", port, !udp, inodes);
  if (inodes.empty())
    return std::nullopt;
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator{"/proc", ec}) {
    const auto& pid = proc.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::error_code fd_ec;
    for (const auto& fd : std::filesystem::directory_iterator{proc.path() / "fd", fd_ec}) {
      std::error_code link_ec;
      auto target = std::filesystem::read_symlink(fd.path(), link_ec);
      if (link_ec || !inodes.contains(target.string()))
        continue;
      std::ifstream comm{proc.path() / "comm"};
      std::string name;
      std::getline(comm, name);
      return name + " (pid " + pid + ")";
    }
  }
  return std::nullopt;
}

} // namespace lockbridge::transport
