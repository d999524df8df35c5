#include "status_socket.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace lockbridge {

namespace {

sockaddr_un address_of(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof addr.sun_path)
    throw std::runtime_error{"status socket path too long: " + path.string()};
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return addr;
}

} // namespace

status_socket::status_socket(std::filesystem::path path, provider answer)
  : path_(std::move(path)), answer_(std::move(answer)) {
  auto addr = address_of(path_);
  // A socket file left by a daemon that was killed: nobody answers on it.
  // One that answers belongs to a running daemon: never take it over.
  if (std::filesystem::exists(path_)) {
    if (query_status(path_, 1).ok)
      throw std::runtime_error{"another lockbridge process answers on " + path_.string()
                               + "; stop it first, or give this one its own "
                                 "gateway.status_socket"};
    ::unlink(path_.c_str());
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
      || ::chmod(path_.c_str(), 0660) != 0 || ::listen(listen_fd_, 8) != 0) {
    auto why = std::string{std::strerror(errno)};
    if (listen_fd_ >= 0)
      ::close(listen_fd_);
    throw std::runtime_error{"cannot listen on " + path_.string() + ": " + why};
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread{[this] { loop(); }};
}

status_socket::~status_socket() {
  std::uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable())
    thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
  ::unlink(path_.c_str());
}

void status_socket::loop() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0 && errno != EINTR)
      return;
    if (fds[1].revents & POLLIN)
      return;
    if (!(fds[0].revents & POLLIN))
      continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    // One request line, read within 2 s (a client that sends nothing and
    // waits gets the status: older clients did exactly that).
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string request;
    char buf[4096];
    while (request.size() <= max_request && request.find('\n') == std::string::npos) {
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        break;
      request.append(buf, static_cast<std::size_t>(n));
    }
    std::string text;
    if (request.size() > max_request) {
      text = R"({"error":"request longer than 64 KiB"})";
    } else {
      if (auto nl = request.find('\n'); nl != std::string::npos)
        request.resize(nl);
      text = answer_(request.empty() ? std::string{"status"} : request);
    }
    text += "\n";
    std::size_t sent = 0;
    while (sent < text.size()) {
      auto n = ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0)
        break;
      sent += static_cast<std::size_t>(n);
    }
    ::close(fd);
  }
}

status_reply query_status(const std::filesystem::path& path, int timeout_s,
                          const std::string& request) {
  status_reply out;
  sockaddr_un addr{};
  try {
    addr = address_of(path);
  } catch (const std::exception& e) {
    out.text = e.what();
    return out;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    out.text = std::strerror(errno);
    return out;
  }
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    auto err = errno;
    ::close(fd);
    out.not_running = err == ENOENT || err == ECONNREFUSED;
    out.text = out.not_running ? "lockbridge is not running (nothing listens on " + path.string() + ")"
               : err == EACCES ? "permission denied on " + path.string()
                                   + " (run as root or a member of the lockbridge group)"
                               : "cannot connect to " + path.string() + ": " + std::strerror(err);
    return out;
  }
  auto line = request + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    out.text = "cannot send the request to " + path.string() + ": " + std::strerror(errno);
    return out;
  }
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      out.text.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0) {
      ::close(fd);
      out.text = "lockbridge did not answer within " + std::to_string(timeout_s) + " s";
      return out;
    }
    break;
  }
  ::close(fd);
  out.ok = !out.text.empty();
  if (!out.ok)
    out.text = "lockbridge closed the connection without an answer";
  return out;
}

} // namespace lockbridge
