// The TOML config loader, as check-config and a reload run it: any text
// gives a config or errors with positions, never a crash.
#include "config/config.hpp"
#include "fuzz_common.hpp"

using namespace lockbridge;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text{fuzz::text(data, size)};
  // locate: no referenced file is opened (the fuzzer must not read the disk).
  auto out = config::load_from_string(text, "fuzz.toml", "/nonexistent-lockbridge-fuzz", {},
                                      config::load_purpose::locate);
  FUZZ_REQUIRE(out.config.has_value() == out.errors.empty());
  for (const auto& e : out.errors)
    FUZZ_REQUIRE(!e.to_string().empty());
  return 0;
}
