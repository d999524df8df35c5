// The streaming CBOR reader and the shape check that stands before
// nlohmann's DOM: an input that passes the check must parse without an
// exception, and the reader must never read out of bounds.
#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "protocols/cbor.hpp"

using namespace lockbridge;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto input = fuzz::bytes(data, size);
  // Walk every head the reader gives, as the hot-path decoders do.
  protocol::cbor::reader in{input};
  for (std::size_t steps = 0; steps < 100000; ++steps) {
    if (in.take_break())
      continue;
    auto h = in.next();
    if (!h)
      break;
    FUZZ_REQUIRE(in.position() <= size);
    if (h->type == protocol::cbor::major::text_string && !in.text(*h))
      break;
    if (h->type == protocol::cbor::major::byte_string && !in.bytes(*h))
      break;
  }
  for (std::size_t depth : {1, 2, 8}) {
    auto problem = protocol::cbor::check_shape(input, depth);
    if (problem) {
      FUZZ_REQUIRE(problem->find("at byte") != std::string::npos);
      continue;
    }
    // The promise: no throw, and text that dump() takes.
    auto doc = nlohmann::json::from_cbor(input.begin(), input.end(), true, false);
    FUZZ_REQUIRE(!doc.is_discarded());
    FUZZ_REQUIRE(!doc.dump().empty());
  }
  return 0;
}
