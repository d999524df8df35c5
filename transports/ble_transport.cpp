// The BLE transport's facade: its thread and loop, and the inbox through
// which other threads hand it answers, commands and new locks. The links
// themselves are transports/ble_links.hpp's; BlueZ is reached through
// transports/bluez_client.hpp.

#include "transports/ble_transport.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "transports/ble_links.hpp"
#include "transports/bluez_client.hpp"
#include "transports/contain.hpp"
#include "transports/priority.hpp"
#include "transports/thread_owner.hpp"

namespace lockbridge::transport {

struct ble_transport::impl {
  /// Wakes the loop when the inbox has something (created first: the
  /// links' constructor does not need it, the loop does).
  int wake_fd = -1;
  bluez::client bus;
  ble_links links;
  std::thread thread;
  std::atomic<bool> running{false};
  thread_owner io_thread; ///< the BLE loop: the only thread touching sd-bus and the links

  // What other threads hand over, taken by the loop on each pass.
  std::mutex mutex;
  std::deque<std::pair<request_id, events_reply>> completions;
  std::deque<std::pair<std::string, pending_command>> new_commands;
  std::optional<std::vector<ble_lock>> new_locks;

  explicit impl(ble_transport_config cfg)
    : wake_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      bus(cfg.ble.adapter, forward_signals()),
      links(std::move(cfg), bus) {
    if (wake_fd < 0)
      throw std::runtime_error{"BLE: eventfd failed"};
  }

  ~impl() {
    bus.detach();
    if (wake_fd >= 0)
      ::close(wake_fd);
  }

  /// BlueZ's signals, handed to the links.
  bluez::signal_handlers forward_signals() {
    return {[this](const std::string& path, std::string_view iface, bluez::props& ps) {
              links.properties_changed(path, iface, ps);
            },
            [this] { links.objects_changed(); }};
  }

  void wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  void take_inbox() {
    io_thread.check();
    std::deque<std::pair<request_id, events_reply>> done;
    std::deque<std::pair<std::string, pending_command>> commands;
    std::optional<std::vector<ble_lock>> locks;
    {
      std::lock_guard guard{mutex};
      done.swap(completions);
      commands.swap(new_commands);
      locks.swap(new_locks);
    }
    if (locks)
      links.apply_locks(*locks);
    for (auto& [id, reply] : done)
      links.complete(id, reply);
    for (auto& [lock, command] : commands)
      links.add_command(lock, std::move(command));
  }

  /// One pass of the BLE thread: bus events, timers, what to start next.
  void loop_once() {
    if (!bus.attached() && !bus.attach()) {
      // Commands still end by their deadline; nothing else can happen.
      take_inbox();
      links.tick();
      bus.wait(wake_fd, 200);
      return;
    }
    links.refresh();
    take_inbox();
    links.tick();
    links.schedule();
    auto pumped = bus.pump();
    if (pumped == bluez::client::pumped::failed) {
      links.bus_lost();
      return;
    }
    // What just happened may let a link be released or started now.
    if (pumped == bluez::client::pumped::idle && running)
      bus.wait(wake_fd, 50);
  }

  void loop() {
    io_thread.claim();
    while (running)
      contain("ble: the BLE thread", [&] { loop_once(); },
              [] { std::this_thread::sleep_for(std::chrono::milliseconds{100}); });
    if (bus.attached())
      links.release_all(); // the Disconnects go out as detach flushes the bus
    bus.detach();
  }
};

ble_transport::ble_transport(ble_transport_config cfg)
  : impl_(std::make_unique<impl>(std::move(cfg))) {}

ble_transport::~ble_transport() { stop(); }

void ble_transport::start() {
  if (impl_->running.exchange(true))
    return;
  impl_->thread = std::thread{[this] {
    // Locks wait on this thread's answers (an access decision is made here).
    prefer_this_thread("ble: the I/O thread");
    impl_->loop();
  }};
}

void ble_transport::stop() {
  if (!impl_->running.exchange(false))
    return;
  impl_->wake();
  if (impl_->thread.joinable())
    impl_->thread.join();
}

void ble_transport::complete(request_id id, events_reply reply) {
  {
    std::lock_guard guard{impl_->mutex};
    impl_->completions.emplace_back(id, std::move(reply));
  }
  impl_->wake();
}

void ble_transport::send_command(const std::string& lock, std::vector<std::uint8_t> body,
                                 std::chrono::steady_clock::time_point deadline,
                                 command_callback done) {
  {
    std::lock_guard guard{impl_->mutex};
    impl_->new_commands.emplace_back(
      lock, pending_command{std::move(body), deadline, std::move(done), 0, std::nullopt});
  }
  impl_->wake();
}

std::map<std::string, std::int64_t, std::less<>> ble_transport::last_seen() const {
  return impl_->links.last_seen();
}

refusal_report ble_transport::refusals() const { return impl_->links.refusals(); }

void ble_transport::set_locks(std::vector<ble_lock> locks) {
  {
    std::lock_guard guard{impl_->mutex};
    impl_->new_locks = std::move(locks);
  }
  impl_->wake();
}

const ble_counters& ble_transport::counters() const noexcept { return impl_->links.counters(); }

} // namespace lockbridge::transport
