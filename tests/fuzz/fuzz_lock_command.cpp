// The lock-command exchange in CBOR: the lock's answer (and, as a lock reads
// it, the gateway's request). The answer's text goes into the result the
// cloud gets, through dump(): that must never throw.
#include "fuzz_common.hpp"
#include "protocols/credentials.hpp"
#include "protocols/lock_commands.hpp"

using namespace lockbridge;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto input = fuzz::bytes(data, size);
  if (auto answer = protocol::decode_lock_answer(input)) {
    auto again = protocol::decode_lock_answer(protocol::encode_lock_answer(*answer));
    FUZZ_REQUIRE(again.ok() && *again == *answer);
    protocol::command_result r;
    r.id = answer->id;
    r.command = "lock";
    r.status = answer->result;
    r.detail = answer->detail.value_or("");
    FUZZ_REQUIRE(!protocol::encode_command_result("site-1", "gw-1", r).empty());
  } else {
    // A refused answer's diagnostic is put in the result as text too.
    protocol::command_result r;
    r.id = "c1";
    r.command = "lock";
    r.status = "failed";
    r.detail = "the lock's answer is not valid: " + answer.error().to_string();
    FUZZ_REQUIRE(!protocol::encode_command_result("site-1", "gw-1", r).empty());
  }
  if (auto request = protocol::decode_lock_request(input)) {
    auto again = protocol::decode_lock_request(protocol::encode_lock_request(*request));
    FUZZ_REQUIRE(again.ok() && *again == *request);
    FUZZ_REQUIRE(request->expires_at > 0);
  }
  return 0;
}
