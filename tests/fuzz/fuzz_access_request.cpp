// POST /v1/access and the BLE access message: what a lock asks.
#include <date/tz.h>

#include "fuzz_common.hpp"
#include "protocols/cbor.hpp"
#include "protocols/credentials.hpp"

using namespace lockbridge;

namespace {

std::vector<std::uint8_t> encode(const protocol::access_request& r) {
  std::vector<std::uint8_t> out;
  protocol::cbor::writer w{out};
  w.map(3);
  w.text("cred");
  w.text(r.cred);
  w.text("door");
  w.text(r.door);
  w.text("ts");
  w.integer(r.ts);
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto request = protocol::decode_access_request(fuzz::bytes(data, size));
  if (!request)
    return 0;
  FUZZ_REQUIRE(!request->cred.empty() && !request->door.empty());
  FUZZ_REQUIRE(protocol::cbor::is_valid_utf8(request->cred));
  auto again = protocol::decode_access_request(encode(*request));
  FUZZ_REQUIRE(again.ok());
  FUZZ_REQUIRE(again->cred == request->cred && again->door == request->door
               && again->ts == request->ts);
  // The decision on it never throws, whatever the credential says.
  protocol::credential c;
  c.subject = "s";
  c.doors = {request->door};
  c.version = 1;
  static const auto* zone = date::locate_zone("Europe/Rome");
  // The gateway decides at its own clock (never the lock's): a time in 2026.
  auto decision = protocol::decide(&c, request->door, 1795772985000, *zone);
  FUZZ_REQUIRE(!protocol::encode_access_answer(decision).empty());
  return 0;
}
