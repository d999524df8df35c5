// The lock's own state (a /v1/state notification, the BLE state message).
#include "fuzz_common.hpp"
#include "protocols/lock_commands.hpp"

using namespace lockbridge;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto state = protocol::decode_lock_state(fuzz::bytes(data, size));
  if (!state)
    return 0;
  FUZZ_REQUIRE(state->battery <= 100);
  FUZZ_REQUIRE(!state->fw.empty() && state->fw.size() <= 32);
  auto again = protocol::decode_lock_state(protocol::encode_lock_state(*state));
  FUZZ_REQUIRE(again.ok() && *again == *state);
  return 0;
}
