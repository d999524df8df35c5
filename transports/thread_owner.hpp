#pragma once

#include <atomic>
#include <cassert>
#include <thread>

namespace lockbridge::transport {

/// The thread a transport's state belongs to (its I/O loop). Members that
/// only that thread may run call `check()`: an assertion in debug builds
/// (the ASan and TSan presets), nothing in release builds. docs/design.md,
/// decision 55, has the whole thread model.
class thread_owner {
public:
  /// Called first thing on the owning thread.
  void claim() noexcept { owner_.store(std::this_thread::get_id(), std::memory_order_release); }

  void check() const noexcept {
    assert(owner_.load(std::memory_order_acquire) == std::thread::id{}
           || owner_.load(std::memory_order_acquire) == std::this_thread::get_id());
  }

private:
  std::atomic<std::thread::id> owner_{};
};

} // namespace lockbridge::transport
