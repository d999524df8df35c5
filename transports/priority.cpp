#include "transports/priority.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace lockbridge::transport {

void prefer_this_thread(const char* who) noexcept {
  constexpr int preferred_nice = -10;
  try {
    if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), preferred_nice) != 0)
      spdlog::debug("{}: runs at the process's priority (nice {} needs CAP_SYS_NICE or "
                    "LimitNICE={}: {})",
                    who, preferred_nice, preferred_nice, std::strerror(errno));
  } catch (...) {
    // Logging failed; the thread runs as it is.
  }
}

} // namespace lockbridge::transport
