// Every cloud JSON input (cmd/*): credential snapshot chunk and delta, lock
// command, erase_subject, rotate_keys, and the id scan used for the result
// of a refused one. Each decoder sees every input; a result is built as the
// gateway would, and must serialise.
#include "fuzz_common.hpp"
#include "protocols/cbor.hpp"
#include "protocols/cloud_messages.hpp"
#include "protocols/credentials.hpp"
#include "protocols/lock_commands.hpp"

using namespace lockbridge;

namespace {

void result_for(std::string_view command, const std::string& id,
                const std::optional<input_error>& error) {
  protocol::command_result r;
  r.id = id;
  r.command = command;
  r.status = error ? "error" : "ok";
  r.error = error;
  FUZZ_REQUIRE(!protocol::encode_command_result("site-1", "gw-1", r).empty());
}

template <class T>
void check(std::string_view command, const result<T>& decoded, std::string_view text) {
  if (decoded) {
    FUZZ_REQUIRE(protocol::is_valid_id(decoded->id));
    result_for(command, decoded->id, std::nullopt);
  } else {
    FUZZ_REQUIRE(protocol::cbor::is_valid_utf8(decoded.error().field)
                 || !protocol::cbor::is_valid_utf8(text));
    result_for(command, protocol::command_id_of(text).value_or(""), decoded.error());
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto text = fuzz::text(data, size);
  if (auto id = protocol::command_id_of(text))
    FUZZ_REQUIRE(protocol::is_valid_id(*id));
  auto chunk = protocol::decode_snapshot_chunk(text);
  check("credentials/snapshot", chunk, text);
  if (chunk) {
    FUZZ_REQUIRE(chunk->chunk >= 1 && chunk->chunk <= chunk->chunks);
    for (const auto& c : chunk->credentials) {
      // What is stored must decode back from its stored form.
      auto stored = protocol::decode_credential(protocol::encode_credential(c.value));
      FUZZ_REQUIRE(stored.ok() && *stored == c.value);
    }
  }
  auto delta = protocol::decode_credential_delta(text);
  check("credentials/delta", delta, text);
  if (delta) {
    FUZZ_REQUIRE(delta->version >= delta->base_version);
    for (const auto& c : delta->upsert) {
      auto stored = protocol::decode_credential(protocol::encode_credential(c.value));
      FUZZ_REQUIRE(stored.ok() && *stored == c.value);
    }
  }
  auto command = protocol::decode_lock_command(text);
  check("lock", command, text);
  if (command) {
    FUZZ_REQUIRE(command->expires_at > 0);
    FUZZ_REQUIRE(static_cast<std::uint64_t>(command->expires_at)
                 <= protocol::lock_command_limits::max_expires_at_ms);
    auto sent = protocol::decode_lock_request(protocol::encode_lock_request(*command));
    auto expected = *command;
    expected.lock.clear();
    FUZZ_REQUIRE(sent.ok() && *sent == expected);
  }
  check("erase_subject", protocol::decode_erase_subject(text), text);
  check("rotate_keys", protocol::decode_rotate_keys(text), text);
  return 0;
}
