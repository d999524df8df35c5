#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <thread>

namespace lockbridge {

/// The daemon's local status endpoint: a Unix stream socket that answers
/// every connection with one JSON document (from `provider`) and closes.
/// Mode 0660: the service's user and group may read it, nobody else.
class status_socket {
public:
  using provider = std::function<std::string()>;

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
status_reply query_status(const std::filesystem::path& path, int timeout_s);

} // namespace lockbridge
