#include "store/outbox.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "store/commands.hpp"
#include "store/environment.hpp"
#include "tests/store/helpers.hpp"

using namespace lockbridge;
using lockbridge::test::ring;
using lockbridge::test::temp_dir;

TEST_SUITE("store") {

TEST_CASE("outbox: results survive reopening until removed; numbers are never reused") {
  temp_dir dir;
  std::uint64_t first = 0, second = 0;
  {
    auto env = std::make_shared<store::environment>(dir.path, 16u << 20);
    store::outbox box{env, ring(env)};
    first = box.append(R"({"id":"a"})");
    second = box.append(R"({"id":"b"})");
    CHECK(second == first + 1);
    CHECK(box.size() == 2);
  }
  auto env = std::make_shared<store::environment>(dir.path, 16u << 20);
  store::outbox box{env, ring(env)};
  auto all = box.read(0, 10);
  REQUIRE(all.size() == 2);
  CHECK(all[0].payload == R"({"id":"a"})");
  CHECK(all[1].number == second);
  CHECK(box.read(second, 10).size() == 1);
  box.remove(first);
  box.remove(second);
  box.remove(second); // again: nothing to do
  CHECK(box.size() == 0);
  // After everything is removed, numbering goes on (the uplink reads from
  // the last number it published).
  CHECK(box.append("{}") == second + 1);
  // Sealed: the plain text is not in the file.
  box.append(R"({"id":"plain-text-marker"})");
  std::ifstream file{dir.path / "data.mdb", std::ios::binary};
  std::string bytes{std::istreambuf_iterator<char>{file}, {}};
  CHECK(bytes.find("plain-text-marker") == std::string::npos);
  CHECK(bytes.find("outbox") != std::string::npos); // (the table itself is there)
}

TEST_CASE("outbox: a lock command is answered exactly once, across restarts") {
  temp_dir dir;
  auto env = std::make_shared<store::environment>(dir.path, 16u << 20);
  store::outbox box{env, ring(env)};
  store::command_ids commands{env};
  std::vector<std::uint8_t> request{0xa1, 0x62, 'i', 'd', 0x61, 'x'};
  REQUIRE(commands.remember("cmd-1", 2000, "lock-01", request));
  REQUIRE(commands.remember("cmd-2", 1000, "lock-02", request));
  CHECK_FALSE(commands.remember("cmd-1", 2000, "lock-01", request)); // a replay
  auto waiting = commands.unanswered();
  REQUIRE(waiting.size() == 2);
  CHECK(waiting[0].id == "cmd-1");
  CHECK(waiting[0].lock == "lock-01");
  CHECK(waiting[0].expires_at == 2000);
  CHECK(waiting[0].request == request);
  // An unanswered command is not forgotten when it expires: it still owes a result.
  CHECK(commands.forget_expired(5000) == 0);
  box.append_answer(R"({"id":"cmd-2","status":"failed"})", "cmd-2");
  waiting = commands.unanswered();
  REQUIRE(waiting.size() == 1);
  CHECK(waiting[0].id == "cmd-1");
  // Answered, it is still a replay until it expires, then forgotten.
  CHECK_FALSE(commands.remember("cmd-2", 1000, "lock-02", request));
  CHECK(commands.forget_expired(5000) == 1);
  CHECK(box.size() == 1);
}

}
