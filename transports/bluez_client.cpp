#include "transports/bluez_client.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "transports/contain.hpp"

namespace lockbridge::transport::bluez {

namespace {

constexpr std::uint64_t call_timeout_us = 5'000'000;
constexpr const char* object_manager = "org.freedesktop.DBus.ObjectManager";

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

std::string text_of(const sd_bus_error& e, int r) {
  return e.message != nullptr ? e.message : std::strerror(-r);
}

/// BlueZ answers a repeated StartDiscovery or StartNotify with InProgress:
/// what was asked for is under way.
bool in_progress(const sd_bus_error& e) {
  return e.name != nullptr && std::string_view{e.name} == "org.bluez.Error.InProgress";
}

/// An asynchronous call's handler, owned by its sd-bus slot.
struct pending_call {
  reply_handler done;
};

void free_call(void* p) { delete static_cast<pending_call*>(p); }

int on_reply(sd_bus_message* reply, void* userdata, sd_bus_error*) {
  return contain(
    "ble: a BlueZ call's answer",
    [&] {
      auto* call = static_cast<pending_call*>(userdata);
      call_error error;
      if (const sd_bus_error* e = sd_bus_message_get_error(reply)) {
        error.name = e->name != nullptr ? e->name : "error";
        error.message = e->message != nullptr ? e->message : error.name;
      }
      if (call->done)
        call->done(error);
      return 0;
    },
    [] { return 0; });
}

/// PropertiesChanged, parsed and handed on.
int on_properties(sd_bus_message* m, void* userdata, sd_bus_error*) {
  contain(
    "ble: a BlueZ signal",
    [&] {
      auto* self = static_cast<const client*>(userdata);
      const char* iface = nullptr;
      if (sd_bus_message_read(m, "s", &iface) < 0 || iface == nullptr)
        return;
      props ps;
      if (read_props(m, ps) < 0)
        return;
      const char* path = sd_bus_message_get_path(m);
      if (self->handlers().properties)
        self->handlers().properties(path != nullptr ? path : "", iface, ps);
    },
    [] {});
  return 0;
}

/// InterfacesAdded or InterfacesRemoved.
int on_objects(sd_bus_message*, void* userdata, sd_bus_error*) {
  contain(
    "ble: a BlueZ signal",
    [&] {
      auto* self = static_cast<const client*>(userdata);
      if (self->handlers().objects_changed)
        self->handlers().objects_changed();
    },
    [] {});
  return 0;
}

} // namespace

client::client(std::string adapter, signal_handlers handlers)
  : adapter_path_("/org/bluez/" + adapter), handlers_(std::move(handlers)) {}

client::~client() { detach(); }

bool client::attach() {
  auto now = steady_ms();
  if (now < next_attempt_ms_)
    return false;
  next_attempt_ms_ = now + 5000;
  int r = sd_bus_open_system(&bus_);
  if (r < 0) {
    bus_ = nullptr;
    if (!error_logged_)
      spdlog::error("ble: cannot connect to the D-Bus system bus ({}); BLE locks wait for it "
                    "(apt-get install bluez dbus; systemctl start bluetooth)",
                    std::strerror(-r));
    error_logged_ = true;
    return false;
  }
  if (error_logged_)
    spdlog::info("ble: connected to the D-Bus system bus");
  error_logged_ = false;
  sd_bus_add_match(bus_, &props_slot_,
                   "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',"
                   "member='PropertiesChanged',path_namespace='/org/bluez'",
                   &on_properties, this);
  sd_bus_match_signal(bus_, &added_slot_, service, "/", object_manager, "InterfacesAdded",
                      &on_objects, this);
  sd_bus_match_signal(bus_, &removed_slot_, service, "/", object_manager, "InterfacesRemoved",
                      &on_objects, this);
  return true;
}

void client::detach() {
  for (auto** slot : {&props_slot_, &added_slot_, &removed_slot_}) {
    sd_bus_slot_unref(*slot);
    *slot = nullptr;
  }
  if (bus_ != nullptr)
    sd_bus_flush_close_unref(bus_);
  bus_ = nullptr;
}

client::scan_result client::scan(const object_visitor& visit) {
  scan_result out;
  sd_bus_error error = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  int r = sd_bus_call_method(bus_, service, "/", object_manager, "GetManagedObjects", &error,
                             &reply, "");
  if (r < 0) {
    out.error = text_of(error, r);
    sd_bus_error_free(&error);
    return out;
  }
  out.answered = true;
  std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)> owned{reply,
                                                                         &sd_bus_message_unref};
  r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
  while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
    const char* path = nullptr;
    if (sd_bus_message_read(reply, "o", &path) < 0 || path == nullptr)
      break;
    std::string p = path;
    r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
    while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
      const char* iface = nullptr;
      if ((r = sd_bus_message_read(reply, "s", &iface)) < 0 || iface == nullptr)
        break;
      props ps;
      if ((r = read_props(reply, ps)) < 0)
        break;
      if (std::string_view{iface} == adapter_iface && p == adapter_path_)
        out.adapter_seen = true;
      visit(p, iface, ps);
      sd_bus_message_exit_container(reply);
    }
    sd_bus_message_exit_container(reply);
    sd_bus_message_exit_container(reply);
  }
  return out;
}

std::optional<std::string> client::start_discovery() {
  sd_bus_message* m = nullptr;
  sd_bus_error error = SD_BUS_ERROR_NULL;
  // Only the locks' advertisements, and each one again when it changes.
  if (sd_bus_message_new_method_call(bus_, &m, service, adapter_path_.c_str(), adapter_iface,
                                     "SetDiscoveryFilter")
      >= 0) {
    std::string uuid{protocol::ble::service_uuid};
    sd_bus_message_append(m, "a{sv}", 3, "Transport", "s", "le", "DuplicateData", "b", 1, "UUIDs",
                          "as", 1, uuid.c_str());
    if (sd_bus_call(bus_, m, call_timeout_us, &error, nullptr) < 0)
      spdlog::warn("ble: SetDiscoveryFilter: {}", error.message ? error.message : "failed");
    sd_bus_error_free(&error);
    sd_bus_message_unref(m);
  }
  int r = sd_bus_call_method(bus_, service, adapter_path_.c_str(), adapter_iface,
                             "StartDiscovery", &error, nullptr, "");
  std::optional<std::string> failure;
  if (r < 0 && !in_progress(error))
    failure = text_of(error, r);
  sd_bus_error_free(&error);
  return failure;
}

int client::call_async(sd_bus_message* m, std::uint64_t usec, reply_handler done) {
  auto* call = new pending_call{std::move(done)};
  sd_bus_slot* slot = nullptr;
  int r = sd_bus_call_async(bus_, &slot, m, &on_reply, call, usec);
  if (r < 0) {
    delete call;
    return r;
  }
  // The slot owns the handler from now on and lives until the answer.
  sd_bus_slot_set_destroy_callback(slot, &free_call);
  sd_bus_slot_set_floating(slot, 1);
  sd_bus_slot_unref(slot);
  return r;
}

int client::connect(const std::string& device, std::uint64_t timeout_us, reply_handler done) {
  sd_bus_message* m = nullptr;
  int r = sd_bus_message_new_method_call(bus_, &m, service, device.c_str(), device_iface,
                                         "Connect");
  if (r >= 0)
    r = call_async(m, timeout_us, std::move(done));
  sd_bus_message_unref(m);
  return r;
}

std::optional<std::string> client::start_notify(const std::string& characteristic) {
  sd_bus_error error = SD_BUS_ERROR_NULL;
  int r = sd_bus_call_method(bus_, service, characteristic.c_str(), char_iface, "StartNotify",
                             &error, nullptr, "");
  std::optional<std::string> failure;
  if (r < 0 && !in_progress(error))
    failure = text_of(error, r);
  sd_bus_error_free(&error);
  return failure;
}

int client::write(const std::string& characteristic, const protocol::ble::bytes& value,
                  reply_handler done) {
  sd_bus_message* m = nullptr;
  int r = sd_bus_message_new_method_call(bus_, &m, service, characteristic.c_str(), char_iface,
                                         "WriteValue");
  if (r >= 0)
    r = sd_bus_message_append_array(m, 'y', value.data(), value.size());
  if (r >= 0)
    r = sd_bus_message_append(m, "a{sv}", 1, "type", "s", "command");
  if (r >= 0)
    r = call_async(m, call_timeout_us, std::move(done));
  sd_bus_message_unref(m);
  return r;
}

void client::disconnect(const std::string& device, const std::string& characteristic) {
  if (!characteristic.empty())
    sd_bus_call_method_async(bus_, nullptr, service, characteristic.c_str(), char_iface,
                             "StopNotify", nullptr, nullptr, "");
  sd_bus_call_method_async(bus_, nullptr, service, device.c_str(), device_iface, "Disconnect",
                           nullptr, nullptr, "");
}

std::string client::uuid_of(const std::string& characteristic) {
  if (auto it = uuids_.find(characteristic); it != uuids_.end())
    return it->second;
  sd_bus_error error = SD_BUS_ERROR_NULL;
  char* text = nullptr;
  std::string uuid;
  if (sd_bus_get_property_string(bus_, service, characteristic.c_str(), char_iface, "UUID",
                                 &error, &text)
      >= 0) {
    uuid = text;
    std::transform(uuid.begin(), uuid.end(), uuid.begin(), ::tolower);
  }
  std::free(text);
  sd_bus_error_free(&error);
  if (uuids_.size() > 1000)
    uuids_.clear();
  uuids_[characteristic] = uuid;
  return uuid;
}

client::pumped client::pump() {
  // Bounded, so that a flood of signals cannot keep the owner from its
  // timers and its inbox.
  int r = 0;
  int handled = 0;
  while (handled < 256 && (r = sd_bus_process(bus_, nullptr)) > 0)
    ++handled;
  bool progressed = handled > 0;
  if (r < 0) {
    spdlog::error("ble: the system bus connection failed ({}); reconnecting", std::strerror(-r));
    detach();
    return pumped::failed;
  }
  sd_bus_flush(bus_);
  return progressed ? pumped::progressed : pumped::idle;
}

void client::wait(int wake_fd, int max_ms) {
  pollfd fds[2] = {{wake_fd, POLLIN, 0}, {-1, 0, 0}};
  int timeout = max_ms;
  if (bus_ != nullptr) {
    fds[1] = {sd_bus_get_fd(bus_), static_cast<short>(sd_bus_get_events(bus_)), 0};
    std::uint64_t until = 0;
    if (sd_bus_get_timeout(bus_, &until) >= 0 && until != UINT64_MAX) {
      timespec ts{};
      clock_gettime(CLOCK_MONOTONIC, &ts);
      auto mono = std::uint64_t(ts.tv_sec) * 1'000'000 + std::uint64_t(ts.tv_nsec) / 1000;
      timeout = until <= mono ? 0 : std::min<int>(timeout, static_cast<int>((until - mono) / 1000));
    }
  }
  ::poll(fds, 2, timeout);
  if (fds[0].revents & POLLIN) {
    std::uint64_t n = 0;
    [[maybe_unused]] auto got = ::read(wake_fd, &n, sizeof n);
  }
}

} // namespace lockbridge::transport::bluez
