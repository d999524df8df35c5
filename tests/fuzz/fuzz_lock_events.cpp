// POST /v1/events and the BLE events message: a lock's event batch.
#include "fuzz_common.hpp"
#include "protocols/cbor.hpp"
#include "protocols/lock_messages.hpp"

using namespace lockbridge;

namespace {

bool same(const protocol::lock_event& a, const protocol::lock_event& b) {
  return a.seq == b.seq && a.ts == b.ts && a.type == b.type && a.door == b.door
         && a.cred == b.cred && a.detail == b.detail;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto batch = protocol::decode_event_batch(fuzz::bytes(data, size));
  if (!batch) {
    FUZZ_REQUIRE(!batch.error().message.empty());
    return 0;
  }
  // What is accepted keeps the protocol's rules...
  FUZZ_REQUIRE(!batch->events.empty());
  FUZZ_REQUIRE(batch->events.size() <= protocol::lock_limits::max_events_per_batch);
  for (std::size_t i = 0; i < batch->events.size(); ++i) {
    const auto& e = batch->events[i];
    FUZZ_REQUIRE(e.seq > 0 && e.ts > 0);
    FUZZ_REQUIRE(i == 0 || e.seq > batch->events[i - 1].seq);
    FUZZ_REQUIRE(protocol::cbor::is_valid_utf8(e.type) && protocol::cbor::is_valid_utf8(e.door));
    FUZZ_REQUIRE(!e.cred || protocol::cbor::is_valid_utf8(*e.cred));
    FUZZ_REQUIRE(!e.detail || protocol::cbor::is_valid_utf8(*e.detail));
  }
  // ...and round-trips: decode(encode(decoded)) is the same batch.
  auto again = protocol::decode_event_batch(protocol::encode_event_batch(*batch));
  FUZZ_REQUIRE(again.ok());
  FUZZ_REQUIRE(again->events.size() == batch->events.size());
  for (std::size_t i = 0; i < batch->events.size(); ++i)
    FUZZ_REQUIRE(same(again->events[i], batch->events[i]));
  return 0;
}
