#include "transports/bluez_wire.hpp"

#include <systemd/sd-bus.h>

#include <algorithm>
#include <cerrno>

namespace lockbridge::transport::bluez {

int read_variant(sd_bus_message* m, prop& out) {
  const char* contents = nullptr;
  char type = 0;
  int r = sd_bus_message_peek_type(m, &type, &contents);
  if (r <= 0)
    return r < 0 ? r : -EBADMSG;
  std::string sig = contents != nullptr ? contents : "";
  if (sig == "s" || sig == "o") {
    const char* s = nullptr;
    if ((r = sd_bus_message_read(m, "v", sig.c_str(), &s)) < 0)
      return r;
    out.text = s;
  } else if (sig == "b") {
    int b = 0;
    if ((r = sd_bus_message_read(m, "v", "b", &b)) < 0)
      return r;
    out.flag = b != 0;
  } else if (sig == "q") {
    std::uint16_t q = 0;
    if ((r = sd_bus_message_read(m, "v", "q", &q)) < 0)
      return r;
    out.u16 = q;
  } else if (sig == "ay") {
    if ((r = sd_bus_message_enter_container(m, 'v', "ay")) < 0)
      return r;
    const void* p = nullptr;
    std::size_t n = 0;
    if ((r = sd_bus_message_read_array(m, 'y', &p, &n)) < 0)
      return r;
    out.data = protocol::ble::bytes(static_cast<const std::uint8_t*>(p),
                          static_cast<const std::uint8_t*>(p) + n);
    return sd_bus_message_exit_container(m);
  } else if (sig == "a{sv}") {
    if ((r = sd_bus_message_enter_container(m, 'v', "a{sv}")) < 0
        || (r = sd_bus_message_enter_container(m, 'a', "{sv}")) < 0)
      return r;
    while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
      const char* key = nullptr;
      if ((r = sd_bus_message_read(m, "s", &key)) < 0)
        return r;
      prop inner;
      if ((r = read_variant(m, inner)) < 0)
        return r;
      if (inner.data)
        out.service_data[key] = *inner.data;
      if ((r = sd_bus_message_exit_container(m)) < 0)
        return r;
    }
    if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0)
      return r;
    return sd_bus_message_exit_container(m);
  } else {
    return sd_bus_message_skip(m, "v");
  }
  return r;
}

int read_props(sd_bus_message* m, props& out) {
  int r = sd_bus_message_enter_container(m, 'a', "{sv}");
  if (r < 0)
    return r;
  while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
    const char* key = nullptr;
    if ((r = sd_bus_message_read(m, "s", &key)) < 0)
      return r;
    if ((r = read_variant(m, out[key])) < 0)
      return r;
    if ((r = sd_bus_message_exit_container(m)) < 0)
      return r;
  }
  if (r < 0)
    return r;
  return sd_bus_message_exit_container(m);
}

std::string device_path(const std::string& adapter, const std::string& address) {
  std::string p = "/org/bluez/" + adapter + "/dev_" + address;
  std::replace(p.begin(), p.end(), ':', '_');
  return p;
}

std::string address_of_path(std::string_view path) {
  auto at = path.find("/dev_");
  if (at == std::string_view::npos || path.size() < at + 5 + 17)
    return "?";
  std::string a{path.substr(at + 5, 17)};
  std::replace(a.begin(), a.end(), '_', ':');
  return a;
}

} // namespace lockbridge::transport::bluez
