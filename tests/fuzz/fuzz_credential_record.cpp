// Stored values: a credential and a journal record as LMDB holds them (after
// opening). Not outside input, but damage must be an error, never a crash,
// and what decodes must encode back to the same bytes.
#include "fuzz_common.hpp"
#include "protocols/cloud_messages.hpp"
#include "protocols/credentials.hpp"

using namespace lockbridge;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto input = fuzz::bytes(data, size);
  if (auto c = protocol::decode_credential(input)) {
    auto bytes = protocol::encode_credential(*c);
    auto again = protocol::decode_credential(bytes);
    FUZZ_REQUIRE(again.ok() && *again == *c);
    FUZZ_REQUIRE(c->doors.size() <= protocol::credential_limits::max_doors);
  }
  if (auto r = protocol::decode_record(input)) {
    auto again = protocol::decode_record(protocol::encode_record(*r));
    FUZZ_REQUIRE(again.ok() && *again == *r);
  }
  return 0;
}
