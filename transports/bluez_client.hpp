#pragma once
// The BLE transport's D-Bus side: one connection to the system bus and the
// BlueZ calls the transport makes on it (the object tree, discovery,
// Connect, StartNotify, WriteValue, Disconnect), with BlueZ's signals handed
// to the transport as parsed properties. It knows object paths and D-Bus,
// not locks, sessions or schedules: those are the transport's
// (transports/ble_links.hpp). Not thread-safe: the transport's thread owns it.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "transports/bluez_wire.hpp"

struct sd_bus;
struct sd_bus_slot;

namespace lockbridge::transport::bluez {

/// The error of an asynchronous call's answer (empty when it succeeded),
/// with BlueZ's error name to tell "already connected" from a failure.
struct call_error {
  std::string name;
  std::string message;
  [[nodiscard]] bool failed() const noexcept { return !name.empty() || !message.empty(); }
};
using reply_handler = std::function<void(const call_error&)>;

/// What BlueZ's signals say, as the client hands them on (on the owner's
/// thread, from within `pump`). Exceptions are contained and logged.
struct signal_handlers {
  /// PropertiesChanged of an object under /org/bluez.
  std::function<void(const std::string& path, std::string_view iface, props&)> properties;
  /// InterfacesAdded or InterfacesRemoved: the tree changed.
  std::function<void()> objects_changed;
};

/// One object interface of GetManagedObjects' answer.
using object_visitor = std::function<void(const std::string& path, std::string_view iface, props&)>;

class client {
public:
  client(std::string adapter, signal_handlers handlers);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Connects to the system bus and subscribes to BlueZ's signals. At most
  /// one attempt per 5 s; a failure is logged once, with how to fix it.
  bool attach();
  [[nodiscard]] bool attached() const noexcept { return bus_ != nullptr; }
  /// Flushes what is queued and closes the connection.
  void detach();

  /// Walks GetManagedObjects, visiting every interface of every object:
  /// whether BlueZ answered (and why not), and whether the configured
  /// adapter is in its tree.
  struct scan_result {
    bool answered = false;
    std::string error;
    bool adapter_seen = false;
  };
  scan_result scan(const object_visitor& visit);

  /// SetDiscoveryFilter (the lock service's UUID, LE, duplicates reported)
  /// and StartDiscovery on the adapter; the error, if any.
  std::optional<std::string> start_discovery();
  /// Device1.Connect, answered through `done` within `timeout_us`.
  int connect(const std::string& device, std::uint64_t timeout_us, reply_handler done);
  /// StartNotify on a characteristic (synchronous: it is answered at once).
  std::optional<std::string> start_notify(const std::string& characteristic);
  /// WriteValue of type "command"; writes of one connection reach BlueZ in
  /// order; a failure comes through `done`.
  int write(const std::string& characteristic, const protocol::ble::bytes& value,
            reply_handler done);
  /// StopNotify (when `characteristic` is not empty) and Device1.Disconnect,
  /// neither waited for.
  void disconnect(const std::string& device, const std::string& characteristic = {});
  /// The UUID of a characteristic (cached: BlueZ's object paths are stable).
  std::string uuid_of(const std::string& characteristic);

  /// Handles what the bus has for us (answers and signals): `progressed`
  /// when anything was handled, `failed` when the connection broke (it is
  /// then closed: attach again).
  enum class pumped { idle, progressed, failed };
  pumped pump();
  /// Waits up to `max_ms` for the bus or `wake_fd` (drained when it fired).
  void wait(int wake_fd, int max_ms);

  /// Where BlueZ's signals go.
  [[nodiscard]] const signal_handlers& handlers() const noexcept { return handlers_; }

private:
  int call_async(sd_bus_message* m, std::uint64_t usec, reply_handler done);

  std::string adapter_path_;
  signal_handlers handlers_;
  sd_bus* bus_ = nullptr;
  sd_bus_slot* props_slot_ = nullptr;
  sd_bus_slot* added_slot_ = nullptr;
  sd_bus_slot* removed_slot_ = nullptr;
  std::int64_t next_attempt_ms_ = 0; ///< steady clock
  bool error_logged_ = false;
  std::map<std::string, std::string, std::less<>> uuids_; ///< characteristic -> UUID
};

} // namespace lockbridge::transport::bluez
