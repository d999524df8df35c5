#include "protocols/pseudonym.hpp"

#include <doctest/doctest.h>

#include <cstring>

using namespace lockbridge::protocol;

TEST_SUITE("protocols") {

TEST_CASE("pseudonym: known answer for the v1 construction") {
  // Computed independently: python3 -c "import hmac,hashlib,base64;
  // print(base64.urlsafe_b64encode(hmac.new(bytes(range(32)),
  // b'lockbridge/credential-pseudonym/v1\x00' + b'04A1B2C3D4',
  // hashlib.sha256).digest()).rstrip(b'='))"
  pseudonymiser::key_type key{};
  for (std::size_t i = 0; i < key.size(); ++i)
    key[i] = static_cast<std::uint8_t>(i);
  pseudonymiser p{key, 7};
  CHECK(p("04A1B2C3D4") == "p1.7.Fz4ojM9nBrX1jKg_S5euoGWv2Dot4XR9x1fsGtrh6e4");
}

TEST_CASE("pseudonym: same input same output, different key or epoch differs") {
  pseudonymiser::key_type a{}, b{};
  b[0] = 1;
  pseudonymiser pa{a, 1}, pb{b, 1}, pa2{a, 2};
  CHECK(pa("1234") == pa("1234"));
  CHECK(pa("1234") != pa("1235"));
  CHECK(pa("1234") != pb("1234"));
  CHECK(pa("1234").substr(0, 5) == "p1.1.");
  CHECK(pa2("1234").substr(0, 5) == "p1.2.");
  CHECK(pa("1234").find("1234") == std::string::npos);
  CHECK(is_pseudonym(pa("1234")));
  CHECK_FALSE(is_pseudonym("1234"));
  CHECK_FALSE(is_pseudonym("p1..abc"));
}

TEST_CASE("pseudonym: base64url vectors of RFC 4648") {
  auto enc = [](const char* s) {
    return base64url(reinterpret_cast<const std::uint8_t*>(s), std::strlen(s));
  };
  CHECK(enc("") == "");
  CHECK(enc("f") == "Zg");
  CHECK(enc("fo") == "Zm8");
  CHECK(enc("foo") == "Zm9v");
  CHECK(enc("foob") == "Zm9vYg");
  CHECK(enc("fooba") == "Zm9vYmE");
  CHECK(enc("foobar") == "Zm9vYmFy");
}

}

TEST_SUITE("protocols") {

TEST_CASE("pseudonym: known answer for the epoch construction over the lookup key") {
  // What the gateway emits for a raw identifier: the pseudonymiser of the
  // epoch key over the credential's lookup key. Computed independently:
  // lookup = HMAC(bytes([7])*32, b'lockbridge/credential-lookup/v1\x00' + b'04A1B2C3D4')
  // p1.3. + b64url(HMAC(bytes(range(32)), b'lockbridge/credential-pseudonym/v1\x00' + lookup))
  keyed_hmac::key_type lookup_key;
  lookup_key.fill(7);
  keyed_hmac lookup{lookup_key, "lockbridge/credential-lookup/v1"};
  pseudonymiser::key_type epoch_key{};
  for (std::size_t i = 0; i < epoch_key.size(); ++i)
    epoch_key[i] = static_cast<std::uint8_t>(i);
  pseudonymiser p{epoch_key, 3};
  auto mac = lookup("04A1B2C3D4");
  CHECK(p(std::string_view{reinterpret_cast<const char*>(mac.data()), mac.size()})
        == "p1.3.YBwJxaOqJK2rqDIgMoFZXxd-NNqTkKTjtdWy1VkGOz8");
}

}
