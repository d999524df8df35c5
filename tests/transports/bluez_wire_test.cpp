#include "transports/bluez_wire.hpp"

#include <doctest/doctest.h>
#include <systemd/sd-bus.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

using namespace lockbridge::transport::bluez;

namespace {

/// A signal built in memory, sealed and rewound for reading, as sd-bus
/// hands one to a callback. sd-bus makes messages only for a started bus:
/// this one is one end of a socketpair that no one answers (nothing is sent).
struct built_message {
  int fds[2] = {-1, -1};
  sd_bus* bus = nullptr;
  sd_bus_message* m = nullptr;
  built_message() {
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    REQUIRE(sd_bus_new(&bus) >= 0);
    REQUIRE(sd_bus_set_fd(bus, fds[0], fds[0]) >= 0);
    REQUIRE(sd_bus_start(bus) >= 0);
    REQUIRE(sd_bus_message_new_signal(bus, &m, "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01",
                                      "org.freedesktop.DBus.Properties", "PropertiesChanged")
            >= 0);
  }
  ~built_message() {
    sd_bus_message_unref(m);
    sd_bus_close_unref(bus); // closes fds[0]; nothing to flush
    close(fds[1]);
  }
  void seal() {
    REQUIRE(sd_bus_message_seal(m, 1, 0) >= 0);
    REQUIRE(sd_bus_message_rewind(m, 1) >= 0);
  }
};

} // namespace

TEST_SUITE("transports") {

TEST_CASE("bluez wire: a device's properties of every type used are read") {
  built_message b;
  auto* m = b.m;
  const std::vector<std::uint8_t> value{0x01, 0x02, 0x03};
  const std::vector<std::uint8_t> advert{0xA0, 0x0B};
  REQUIRE(sd_bus_message_open_container(m, 'a', "{sv}") >= 0);
  REQUIRE(sd_bus_message_append(m, "{sv}", "Address", "s", "AA:BB:CC:DD:EE:01") >= 0);
  REQUIRE(sd_bus_message_append(m, "{sv}", "Adapter", "o", "/org/bluez/hci0") >= 0);
  REQUIRE(sd_bus_message_append(m, "{sv}", "Connected", "b", 1) >= 0);
  REQUIRE(sd_bus_message_append(m, "{sv}", "Appearance", "q", 0x0540) >= 0);
  REQUIRE(sd_bus_message_append(m, "{sv}", "RSSI", "n", -60) >= 0); // a type not used: skipped
  REQUIRE(sd_bus_message_open_container(m, 'e', "sv") >= 0);
  REQUIRE(sd_bus_message_append(m, "s", "Value") >= 0);
  REQUIRE(sd_bus_message_open_container(m, 'v', "ay") >= 0);
  REQUIRE(sd_bus_message_append_array(m, 'y', value.data(), value.size()) >= 0);
  REQUIRE(sd_bus_message_close_container(m) >= 0);
  REQUIRE(sd_bus_message_close_container(m) >= 0);
  REQUIRE(sd_bus_message_open_container(m, 'e', "sv") >= 0);
  REQUIRE(sd_bus_message_append(m, "s", "ServiceData") >= 0);
  REQUIRE(sd_bus_message_open_container(m, 'v', "a{sv}") >= 0);
  REQUIRE(sd_bus_message_open_container(m, 'a', "{sv}") >= 0);
  REQUIRE(sd_bus_message_open_container(m, 'e', "sv") >= 0);
  REQUIRE(sd_bus_message_append(m, "s", "0000fe00-0000-1000-8000-00805f9b34fb") >= 0);
  REQUIRE(sd_bus_message_open_container(m, 'v', "ay") >= 0);
  REQUIRE(sd_bus_message_append_array(m, 'y', advert.data(), advert.size()) >= 0);
  for (int i = 0; i < 5; ++i)
    REQUIRE(sd_bus_message_close_container(m) >= 0);
  REQUIRE(sd_bus_message_close_container(m) >= 0); // the outer a{sv}
  b.seal();

  props got;
  REQUIRE(read_props(m, got) >= 0);
  CHECK(got["Address"].text == "AA:BB:CC:DD:EE:01");
  CHECK(got["Adapter"].text == "/org/bluez/hci0");
  CHECK(got["Connected"].flag == true);
  CHECK(got["Appearance"].u16 == std::uint16_t{0x0540});
  CHECK(got.contains("RSSI"));
  CHECK_FALSE(got["RSSI"].text.has_value());
  REQUIRE(got["Value"].data.has_value());
  CHECK(*got["Value"].data == value);
  REQUIRE(got["ServiceData"].service_data.size() == 1);
  CHECK(got["ServiceData"].service_data.begin()->second == advert);
}

TEST_CASE("bluez wire: a message that is not a dictionary is an error, not a crash") {
  built_message b;
  REQUIRE(sd_bus_message_append(b.m, "s", "not a dictionary") >= 0);
  b.seal();
  props got;
  CHECK(read_props(b.m, got) < 0);
  CHECK(got.empty());
}

TEST_CASE("bluez wire: device paths and the addresses in them") {
  CHECK(device_path("hci0", "AA:BB:CC:DD:EE:01") == "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01");
  CHECK(address_of_path("/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01") == "AA:BB:CC:DD:EE:01");
  CHECK(address_of_path("/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01/service0010/char0011")
        == "AA:BB:CC:DD:EE:01");
  CHECK(address_of_path("/org/bluez/hci0") == "?");
  CHECK(address_of_path("/org/bluez/hci0/dev_AA_BB") == "?"); // cut short
}

}
