// BLE: fragments put back together, a sealed message opened, its body
// decoded by kind. The input is read two ways: as raw ATT values (the
// unauthenticated path every nearby device can reach), and as a body that
// this target seals itself under a fixed test key, so that the decoders
// behind authentication are reached too (a lock with its key may send
// anything).
#include "fuzz_common.hpp"
#include "protocols/ble_link.hpp"
#include "protocols/credentials.hpp"
#include "protocols/lock_commands.hpp"
#include "protocols/lock_messages.hpp"

using namespace lockbridge;
namespace ble = protocol::ble;

namespace {

constexpr std::array<std::uint8_t, 32> test_key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                                16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                                28, 29, 30, 31, 32};

void decode_body(ble::kind k, std::span<const std::uint8_t> body) {
  switch (k) {
  case ble::kind::events:
    (void)protocol::decode_event_batch(body);
    break;
  case ble::kind::access:
    (void)protocol::decode_access_request(body);
    break;
  case ble::kind::state:
    (void)protocol::decode_lock_state(body);
    break;
  case ble::kind::command_answer:
    if (auto a = ble::decode_answer(body))
      (void)protocol::decode_lock_answer(a->payload);
    break;
  case ble::kind::idle:
  default:
    (void)ble::decode_answer(body);
    break;
  }
}

/// Feeds ATT values to a reassembler; each complete message is opened.
void receive(ble::reassembler& r, const std::vector<ble::bytes>& values, std::int64_t now) {
  for (const auto& v : values) {
    auto out = r.add(v, now);
    if (out.result != ble::reassembler::outcome::what::complete)
      continue;
    FUZZ_REQUIRE(out.message.size() <= ble::max_message_bytes);
    auto header = ble::peek(out.message);
    if (!header)
      continue;
    if (auto opened = ble::open(test_key, out.message))
      decode_body(opened->what, opened->body);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2)
    return 0;
  // Raw: the input cut into ATT values at each 0xff 0xfe marker.
  {
    ble::reassembler r{2000};
    std::vector<ble::bytes> values(1);
    for (std::size_t i = 0; i < size; ++i) {
      if (i + 1 < size && data[i] == 0xff && data[i + 1] == 0xfe) {
        values.emplace_back();
        ++i;
        continue;
      }
      values.back().push_back(data[i]);
    }
    receive(r, values, 0);
    r.expire(5000);
    FUZZ_REQUIRE(r.in_assembly() == 0);
  }
  // Authentic: byte 0 picks the kind, byte 1 the MTU; the rest is the body.
  static constexpr ble::kind lock_kinds[] = {ble::kind::events, ble::kind::access,
                                             ble::kind::time_request, ble::kind::state,
                                             ble::kind::command_answer, ble::kind::idle};
  auto k = lock_kinds[data[0] % std::size(lock_kinds)];
  std::size_t mtu = 23 + data[1];
  std::span<const std::uint8_t> body{data + 2, size - 2};
  auto message = ble::seal(test_key, k, 7, body);
  auto opened = ble::open(test_key, message);
  FUZZ_REQUIRE(opened.ok() && opened->what == k && opened->counter == 7);
  FUZZ_REQUIRE(std::equal(opened->body.begin(), opened->body.end(), body.begin(), body.end()));
  auto parts = ble::fragment(static_cast<std::uint16_t>(size), message, mtu);
  if (!parts)
    return 0;
  ble::reassembler r{2000};
  // Delivered backwards, the first one delivered twice: order and repeats
  // must not matter.
  std::vector<ble::bytes> values(parts->rbegin(), parts->rend());
  if (values.size() > 1)
    values.insert(values.begin() + 1, values.front());
  bool completed = false;
  for (const auto& v : values) {
    auto out = r.add(v, 0);
    if (out.result == ble::reassembler::outcome::what::complete) {
      FUZZ_REQUIRE(!completed && out.message == message);
      completed = true;
      decode_body(k, opened->body);
    }
  }
  FUZZ_REQUIRE(completed || message.size() > ble::max_message_bytes);
  return 0;
}
