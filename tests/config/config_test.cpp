#include "config/config.hpp"
#include "config/secrets.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

using namespace lockbridge::config;

namespace {

struct fixture {
  std::filesystem::path dir;
  fixture() {
    std::random_device rd;
    dir = std::filesystem::temp_directory_path()
          / ("lockbridge-cfg-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(dir);
    write("psk-a", "0123456789abcdef0123456789abcdef", 0600);
    write("psk-b", "fedcba9876543210fedcba9876543210", 0600);
    write("short.psk", "abc", 0600);
    write("pseudonym.key", std::string(64, 'a'), 0600);
    write("lookup.key", std::string(64, 'b'), 0600);
    write("ca.pem", "x", 0644);
    write("client.pem", "x", 0644);
    write("client.key", "x", 0600);
    write("open.key", "x", 0644);
  }
  ~fixture() { std::filesystem::remove_all(dir); }

  void write(const std::string& name, const std::string& text, mode_t mode) {
    std::ofstream{dir / name} << text;
    ::chmod((dir / name).c_str(), mode);
  }

  load_result load(const std::string& text) {
    return load_from_string(text, "test.toml", dir);
  }
};

const std::string valid = R"(
[gateway]
site = "site-1"
id = "gw-1"
environment = "development"
pseudonym_key_file = "pseudonym.key"
time_zone = "Europe/Rome"

[credentials]
lookup_key_file = "lookup.key"
max_age_hours = 72

[[doors]]
id = "front"
offline_policy = "keep_last_known"

[store]
state_dir = "state"
journal_max_mb = 64

[coap]
dtls_listen = ["127.0.0.1:5684", "[::1]:5684"]
plain_listen = ["127.0.0.1:5683"]

[mqtt]
broker = "ssl://127.0.0.1:8883"
ca_file = "ca.pem"
cert_file = "client.pem"
key_file = "client.key"

[[locks]]
id = "lock-a"
psk_file = "psk-a"

[[locks]]
id = "lock-b"
psk_file = "psk-b"
)";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  auto pos = text.find(from);
  REQUIRE(pos != std::string::npos);
  return text.replace(pos, from.size(), to);
}

} // namespace

TEST_SUITE("config") {

TEST_CASE("config: a valid file loads with defaults filled in") {
  fixture f;
  auto out = f.load(valid);
  for (const auto& e : out.errors)
    MESSAGE(e.to_string());
  REQUIRE(out.config.has_value());
  const auto& c = *out.config;
  CHECK(c.site == "site-1");
  CHECK(c.environment == run_environment::development);
  CHECK(c.store.state_dir == f.dir / "state");
  CHECK(c.store.journal_max_bytes == 64ull << 20);
  CHECK(c.store.retention_days == 90);
  CHECK(c.coap.dtls_listen.size() == 2);
  CHECK(c.coap.dtls_listen[1].host == "::1");
  CHECK(c.mqtt.inflight_window == 100);
  CHECK(c.mqtt.client_id == "lockbridge-site-1-gw-1");
  REQUIRE(c.locks.size() == 2);
  CHECK(c.locks[1].psk_file == f.dir / "psk-b");
  CHECK(c.time_zone == "Europe/Rome");
  CHECK(c.credentials.max_age_hours == 72);
  CHECK(c.credentials.default_policy == offline_policy::fail_secure);
  REQUIRE(c.credentials.doors.size() == 1);
  CHECK(c.credentials.doors[0].policy == offline_policy::keep_last_known);
}

TEST_CASE("config: each broken file names file, line and key") {
  struct row {
    const char* what;
    std::string text;
    const char* key;
    const char* message_part;
  };
  std::vector<row> rows{
    {"unknown key", replace(valid, "journal_max_mb = 64", "journal_max_mb = 64\ncolour = 1"),
     "store.colour", "unknown key"},
    {"wrong type", replace(valid, "journal_max_mb = 64", "journal_max_mb = \"64\""),
     "store.journal_max_mb", "expected an integer"},
    {"out of range", replace(valid, "journal_max_mb = 64", "retention_days = 91"),
     "store.retention_days", "from 1 to 90"},
    {"missing file", replace(valid, "\"ca.pem\"", "\"nope.pem\""), "mqtt.ca_file",
     "does not exist"},
    {"unknown zone", replace(valid, "Europe/Rome", "Europe/Atlantis"), "gateway.time_zone",
     "IANA name"},
    {"bad policy", replace(valid, "\"keep_last_known\"", "\"open\""), "doors[0].offline_policy",
     "fail_secure"},
    {"same keys", replace(valid, "\"lookup.key\"", "\"pseudonym.key\""),
     "credentials.lookup_key_file", "must differ"},
    {"no credentials", replace(valid, "[credentials]", "[unused]"), "unused", "unknown key"},
    {"duplicate lock", replace(valid, "id = \"lock-b\"", "id = \"lock-a\""), "locks[1].id",
     "duplicate lock id"},
    {"short psk", replace(valid, "\"psk-b\"", "\"short.psk\""), "locks[1].psk_file",
     "16 to 64 bytes"},
    {"plain broker", replace(valid, "ssl://", "tcp://"), "mqtt.broker", "ssl://"},
    {"bad listen", replace(valid, "127.0.0.1:5684", "localhost:5684"), "coap.dtls_listen[0]",
     "numeric"},
    {"bad port", replace(valid, "127.0.0.1:5684", "127.0.0.1:99999"), "coap.dtls_listen[0]",
     "port"},
    {"bad id", replace(valid, "\"site-1\"", "\"site/1\""), "gateway.site", "letters"},
    {"bad environment", replace(valid, "\"development\"", "\"staging\""),
     "gateway.environment", "production"},
    {"plain coap in production", replace(valid, "environment = \"development\"\n", ""),
     "coap.plain_listen", "refused in production"},
  };
  for (const auto& r : rows) {
    CAPTURE(r.what);
    fixture f;
    auto out = f.load(r.text);
    CHECK_FALSE(out.config.has_value());
    REQUIRE_FALSE(out.errors.empty());
    bool found = false;
    for (const auto& e : out.errors) {
      if (e.key == r.key && e.message.find(r.message_part) != std::string::npos) {
        found = true;
        CHECK(e.file == "test.toml");
        CHECK(e.to_string().find("test.toml:") == 0);
      }
    }
    if (!found)
      for (const auto& e : out.errors)
        MESSAGE(e.to_string());
    CHECK(found);
  }
}

TEST_CASE("config: a world-readable secret is refused in production only") {
  fixture f;
  auto prod = replace(replace(valid, "environment = \"development\"\n", ""),
                      "plain_listen = [\"127.0.0.1:5683\"]\n", "");
  auto text = replace(prod, "\"client.key\"", "\"open.key\"");
  auto out = f.load(text);
  REQUIRE_FALSE(out.config.has_value());
  REQUIRE(out.errors.size() == 1);
  CHECK(out.errors[0].key == "mqtt.key_file");
  CHECK(out.errors[0].message.find("chmod o-rwx") != std::string::npos);
  CHECK(out.errors[0].line > 0);
  auto dev = replace(valid, "\"client.key\"", "\"open.key\"");
  CHECK(f.load(dev).config.has_value());
}

TEST_CASE("config: all errors are reported at once, with line numbers") {
  fixture f;
  auto text = replace(replace(valid, "journal_max_mb = 64", "journal_max_mb = -1"),
                      "\"ca.pem\"", "\"nope.pem\"");
  auto out = f.load(text);
  REQUIRE(out.errors.size() == 2);
  auto line_of_bound = 1 + std::count(text.begin(), text.begin() + static_cast<long>(text.find("journal_max_mb")), '\n');
  CHECK(out.errors[0].line == line_of_bound);
  CHECK(out.errors[1].key == "mqtt.ca_file");
}

TEST_CASE("config: a TOML syntax error gives its position") {
  fixture f;
  auto out = f.load("[gateway\nsite = 1");
  REQUIRE(out.errors.size() == 1);
  CHECK(out.errors[0].line == 1);
  CHECK(out.errors[0].message.find("TOML syntax error") != std::string::npos);
}

TEST_CASE("config: no locks is an error") {
  fixture f;
  auto text = valid.substr(0, valid.find("[[locks]]"));
  auto out = f.load(text);
  REQUIRE_FALSE(out.config.has_value());
  CHECK(out.errors.back().key == "locks");
}

TEST_CASE("secrets: keys are read as hex or raw, bad sizes refused") {
  fixture f;
  f.write("hex.key", std::string(64, 'f') + "\n", 0600);
  auto key = read_key32(f.dir / "hex.key");
  REQUIRE(key.ok());
  CHECK((*key)[0] == 0xff);
  f.write("bad.key", std::string(63, 'f'), 0600);
  CHECK_FALSE(read_key32(f.dir / "bad.key").ok());
  f.write("nonhex.key", std::string(64, 'z'), 0600);
  CHECK_FALSE(read_key32(f.dir / "nonhex.key").ok());
  CHECK_FALSE(read_psk(f.dir / "missing").ok());
}

}
