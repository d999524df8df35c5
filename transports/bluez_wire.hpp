#pragma once
// What the BLE transport reads from and names on BlueZ's D-Bus API: the
// property values of its objects (a{sv} dictionaries of the few types BlueZ
// uses here) and the object paths of devices. No loop, no connection, no
// state: the transport's thread owns the bus; these are the parsing and
// naming it needs, unit-tested with messages built in memory
// (tests/transports/bluez_wire_test.cpp).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "protocols/ble_link.hpp"

struct sd_bus_message;

namespace lockbridge::transport::bluez {

inline constexpr const char* service = "org.bluez";
inline constexpr const char* device_iface = "org.bluez.Device1";
inline constexpr const char* adapter_iface = "org.bluez.Adapter1";
inline constexpr const char* char_iface = "org.bluez.GattCharacteristic1";

/// One property value of the few types BlueZ's objects use here.
struct prop {
  std::optional<std::string> text;  ///< s, o
  std::optional<bool> flag;         ///< b
  std::optional<std::uint16_t> u16; ///< q
  std::optional<protocol::ble::bytes> data; ///< ay
  std::map<std::string, protocol::ble::bytes> service_data; ///< a{sv} of ay (ServiceData)
};
using props = std::map<std::string, prop>;

/// Reads the `v` at the message's position into `out`; skips other types.
/// Returns sd-bus's code (negative errno on a malformed message).
int read_variant(sd_bus_message* m, prop& out);

/// Reads an `a{sv}` at the message's position into `out`.
int read_props(sd_bus_message* m, props& out);

/// BlueZ's object path of a device: /org/bluez/{adapter}/dev_AA_BB_CC_DD_EE_FF.
std::string device_path(const std::string& adapter, const std::string& address);

/// The address in a device (or characteristic) path, "?" if there is none.
std::string address_of_path(std::string_view path);

} // namespace lockbridge::transport::bluez
