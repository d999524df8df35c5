#pragma once
// The BLE locks' links: for each configured lock, BlueZ's view of its
// device, its connection phase (transports/ble_link_state.hpp), its session
// (transports/ble_session.hpp) and what waits for it; which lock to connect
// next (transports/ble_scheduler.hpp); and the messages of a session,
// dispatched by kind (ble_messages.cpp). It talks to BlueZ only through
// bluez::client and runs on the BLE transport's thread alone; the
// transport's facade (ble_transport.cpp) owns the thread, the loop and the
// cross-thread inbox.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/ble_link.hpp"
#include "transports/ble_link_state.hpp"
#include "transports/ble_scheduler.hpp"
#include "transports/ble_session.hpp"
#include "transports/ble_transport.hpp"
#include "transports/bluez_client.hpp"

namespace lockbridge::transport {

/// A command for a BLE lock, until it is answered or its deadline passes.
struct pending_command {
  std::vector<std::uint8_t> body;
  std::chrono::steady_clock::time_point deadline;
  command_callback done;
  std::uint32_t attempts = 0;
  std::optional<std::uint64_t> sent_counter; ///< in the current session
};

/// One configured BLE lock.
struct ble_link {
  using steady = std::chrono::steady_clock;

  ble_lock lock;
  warn_limiter bad_batch_warnings;
  std::string path; ///< the device's object path
  ble_phase at = ble_phase::idle;
  bool device_known = false;
  bool connected = false;
  bool services_resolved = false;
  std::string to_lock_path, from_lock_path;
  std::size_t mtu = 23;
  radio_demand demand; ///< why it should be visited, and its backoff
  steady::time_point phase_since{};
  steady::time_point connected_at{};
  steady::time_point last_activity{};
  steady::time_point last_resolve{};
  steady::time_point released_at{};
  std::uint64_t generation = 0; ///< sessions so far (answers to an old one are dropped)
  ble_session session;          ///< nonce, keys and counters of the current session
  std::uint16_t next_msg_id = 1;
  bool lock_idle = false;
  bool state_pending = false; ///< asked for the lock's state, no answer yet
  std::size_t events_in_flight = 0;
  protocol::ble::reassembler assembly{2000};
  std::deque<pending_command> commands;
  std::int64_t last_seen_ms = 0;
};

class ble_links {
public:
  ble_links(ble_transport_config cfg, bluez::client& bus);
  ~ble_links();
  ble_links(const ble_links&) = delete;
  ble_links& operator=(const ble_links&) = delete;

  /// Replaces the set of locks (a removed lock's link is released and its
  /// commands end "not connected").
  void apply_locks(const std::vector<ble_lock>& locks);

  /// Reads BlueZ's tree and (re)starts discovery when it is time: at
  /// once after a change of the tree, else every 30 s (5 s while the
  /// adapter is missing).
  void refresh();
  void objects_changed() { next_adapter_check_ = {}; }
  /// A PropertiesChanged signal (a device's state, a notification).
  void properties_changed(const std::string& path, std::string_view iface, bluez::props& ps);

  /// Timeouts, releases and command deadlines.
  void tick();
  /// Connects the locks whose turn it is.
  void schedule();

  /// Answers the events message `id` if its session is still there.
  void complete(request_id id, const events_reply& reply);
  /// Queues a command for its lock (sent at once if it is connected).
  void add_command(const std::string& lock, pending_command command);

  /// The bus connection broke: every session ends where it stands.
  void bus_lost();
  /// Stopping: every link is released.
  void release_all();

  [[nodiscard]] const ble_counters& counters() const noexcept { return counters_; }
  [[nodiscard]] refusal_report refusals() const { return refusals_.report(); }
  /// When each lock last said something authentic. Any thread.
  [[nodiscard]] std::map<std::string, std::int64_t, std::less<>> last_seen() const;

private:
  using phase = ble_phase;
  using steady = std::chrono::steady_clock;

  // BlueZ's objects (ble_links.cpp)
  void scan_objects(ble_link* resolve = nullptr);
  void seen_device(const std::string& path, bluez::props& ps, bool may_close);
  void adapter_seen_now(bool seen);
  void start_discovery();
  void device_changed(ble_link& l, bluez::props& ps);
  ble_link* link_of_path(std::string_view path);
  ble_link* link_of(const std::string& lock, std::uint64_t generation);

  // connections (ble_links.cpp)
  void enter(ble_link& l, phase p);
  [[nodiscard]] std::size_t busy() const;
  void connect(ble_link& l);
  void connected(const std::string& lock, std::uint64_t generation, const bluez::call_error& e);
  void try_resolve(ble_link& l);
  void release(ble_link& l, const std::string& why);
  void disconnect(ble_link& l);
  void end_session(ble_link& l);
  void lost(ble_link& l, const std::string& why);
  void failed(ble_link& l, const std::string& why);
  void act(ble_link& l, ble_step step, steady::time_point now);
  void expire(ble_link& l, steady::time_point now);
  void finish(pending_command& c, command_outcome::kind k);

  // messages (ble_messages.cpp)
  void notification(const std::string& path, const protocol::ble::bytes& value);
  void stranger(const std::string& path);
  void message(ble_link& l, const protocol::ble::bytes& bytes);
  void authentic(ble_link& l, const protocol::ble::opened& m);
  void events_message(ble_link& l, const protocol::ble::opened& m);
  void access_query(ble_link& l, const protocol::ble::opened& m);
  void state_message(ble_link& l, const protocol::ble::opened& m);
  void command_answer(ble_link& l, const protocol::ble::opened& m);
  void idle_message(ble_link& l, const protocol::ble::opened& m);
  void answer(ble_link& l, protocol::ble::kind k, std::uint64_t re, std::uint16_t code,
              const std::string& text);
  bool send(ble_link& l, protocol::ble::kind k, const protocol::ble::bytes& body);
  bool write(ble_link& l, const protocol::ble::bytes& value);
  void send_commands(ble_link& l);

  ble_transport_config cfg_;
  bluez::client& bus_;
  radio_scheduler scheduler_;
  ble_link_limits limits_;
  ble_counters counters_;
  refusal_log refusals_;
  std::map<std::string, ble_link, std::less<>> links_;          ///< by lock id
  std::map<std::string, std::string, std::less<>> by_path_;     ///< device path -> lock id
  struct waiting_events {
    std::string lock;
    std::uint64_t generation = 0;
    std::uint64_t re = 0;
  };
  std::map<request_id, waiting_events> waiting_;
  request_id next_id_;
  bool adapter_present_ = false;
  bool discovering_ = false;
  bool discovery_warned_ = false;
  steady::time_point next_adapter_check_{};
  std::map<std::string, steady::time_point, std::less<>> unconfigured_logged_;
  mutable std::mutex seen_mutex_;
  std::map<std::string, std::int64_t, std::less<>> seen_;
};

} // namespace lockbridge::transport
