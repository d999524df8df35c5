#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <thread>

namespace lockbridge {

/// The daemon's local control endpoint: a Unix stream socket. A client sends
/// one request line (`status`, or `command <name> <json>`; nothing at all
/// means `status`), the daemon answers with one JSON document (from
/// `provider`) and closes. Mode 0660: the service's user and group may use
/// it, nobody else.
class status_socket {
public:
  using provider = std::function<std::string(const std::string& request)>;
  static constexpr std::size_t max_request = 64 * 1024;

  /// Binds `path` (replacing a stale socket) and starts answering. Throws
  /// std::runtime_error saying why if it cannot.
  status_socket(std::filesystem::path path, provider answer);
  ~status_socket();
  status_socket(const status_socket&) = delete;
  status_socket& operator=(const status_socket&) = delete;

private:
  void loop();

  std::filesystem::path path_;
  provider answer_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
};

/// The client side (`lockbridge status`): the document, or an error message.
struct status_reply {
  bool ok = false;
  bool not_running = false; ///< nothing listens: the daemon is down
  std::string text;         ///< the JSON, or what went wrong
};
status_reply query_status(const std::filesystem::path& path, int timeout_s,
                          const std::string& request = "status");

} // namespace lockbridge
