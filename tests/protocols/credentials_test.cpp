#include "protocols/credentials.hpp"

#include <chrono>
#include <string>

#include <date/tz.h>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace lockbridge::protocol;
using nlohmann::json;

namespace {

/// Unix ms of a local wall-clock time in `zone` (earliest if ambiguous).
std::int64_t local_ms(const char* zone, int y, unsigned mo, unsigned d, int h, int mi) {
  using namespace std::chrono;
  auto ld = date::local_days{date::year{y} / date::month{mo} / date::day{d}};
  auto lt = date::local_seconds{ld} + hours{h} + minutes{mi};
  auto sys = date::locate_zone(zone)->to_sys(lt, date::choose::earliest);
  return duration_cast<milliseconds>(sys.time_since_epoch()).count();
}

json cred_json(const std::string& id) {
  return {{"cred", id}, {"subject", "sub-1"}, {"doors", {"front"}}};
}

json snapshot(json creds) {
  return {{"schema", "lockbridge/credentials-snapshot/1"},
          {"id", "cmd-1"},
          {"snapshot", "snap-1"},
          {"version", 7},
          {"chunk", 1},
          {"chunks", 2},
          {"credentials", std::move(creds)}};
}

} // namespace

TEST_SUITE("protocols") {

TEST_CASE("credentials: the stored form round-trips and damage is refused") {
  credential c;
  c.subject = "sub-42";
  c.doors = {"front", "*"};
  c.valid_from = time_bound{false, 1700000000000};
  c.valid_until = time_bound{true, 1800000000};
  c.schedule = {{0x1f, 8 * 60, 18 * 60}, {0x60, 0, 1440}};
  c.revoked = true;
  c.version = 99;
  auto bytes = encode_credential(c);
  auto back = decode_credential(bytes);
  REQUIRE(back.ok());
  CHECK(*back == c);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    CAPTURE(n);
    CHECK_FALSE(decode_credential(cut).ok());
  }
}

TEST_CASE("credentials: a snapshot chunk decodes, with local bounds and schedules") {
  auto c = cred_json("04A1B2C3");
  c["valid_until"] = "2026-03-29T00:00";
  c["valid_from"] = 1700000000000;
  c["schedule"] = {{{"days", {"mon", "sun"}}, {"from", "08:00"}, {"to", "24:00"}}};
  auto out = decode_snapshot_chunk(snapshot({c}).dump());
  REQUIRE(out.ok());
  CHECK(out->snapshot == "snap-1");
  CHECK(out->version == 7);
  REQUIRE(out->credentials.size() == 1);
  const auto& u = out->credentials[0];
  CHECK(u.cred == "04A1B2C3");
  CHECK(u.value.version == 7);
  REQUIRE(u.value.valid_until.has_value());
  CHECK(u.value.valid_until->local);
  REQUIRE(u.value.schedule.size() == 1);
  CHECK(u.value.schedule[0].days == 0x41);
  CHECK(u.value.schedule[0].to_minute == 1440);
}

TEST_CASE("credentials: bad sync messages are refused naming the field") {
  struct row {
    const char* what;
    std::string text;
    const char* field;
    const char* part;
  };
  auto with = [](const char* key, json value) {
    auto c = cred_json("X1");
    c[key] = std::move(value);
    return snapshot({c}).dump();
  };
  auto no_doors = cred_json("X1");
  no_doors.erase("doors");
  auto wrong_schema = snapshot({cred_json("X1")});
  wrong_schema["schema"] = "lockbridge/credentials-snapshot/2";
  auto chunk_beyond = snapshot({cred_json("X1")});
  chunk_beyond["chunk"] = 3;
  auto top_level_personal = snapshot({cred_json("X1")});
  top_level_personal["operator_email"] = "a@b.c";
  std::vector<row> rows{
    {"not json", "{\"schema\":", "", "not valid JSON"},
    {"array", "[1,2]", "", "expected a JSON object"},
    {"name", with("name", "Alice"), "credentials[0].name", "unknown field"},
    {"surname", with("surname", "Rossi"), "credentials[0].surname", "personal data"},
    {"email", with("email", "a@b.c"), "credentials[0].email", "unknown field"},
    {"subject with @", with("subject", "alice@example.com"), "credentials[0].subject",
     "A-Z a-z 0-9"},
    {"doors missing", snapshot({no_doors}).dump(), "credentials[0].doors", "missing"},
    {"door bad", with("doors", json::array({"a/b"})), "credentials[0].doors[0]", "door id"},
    {"schedule day", with("schedule", json::array({{{"days", {"someday"}}, {"from", "08:00"},
                                                    {"to", "09:00"}}})),
     "credentials[0].schedule[0].days", "mon, tue"},
    {"schedule order", with("schedule", json::array({{{"days", {"mon"}}, {"from", "10:00"},
                                                      {"to", "09:00"}}})),
     "credentials[0].schedule[0].to", "after from"},
    {"schedule clock", with("schedule", json::array({{{"days", {"mon"}}, {"from", "8am"},
                                                      {"to", "09:00"}}})),
     "credentials[0].schedule[0].from", "HH:MM"},
    {"bad local time", with("valid_until", "2026-02-30T00:00"), "credentials[0].valid_until",
     "local date-time"},
    {"revoked text", with("revoked", "yes"), "credentials[0].revoked", "true or false"},
    {"wrong schema", wrong_schema.dump(), "schema", "credentials-snapshot/1"},
    {"chunk beyond", chunk_beyond.dump(), "chunk", "expected 1 to chunks"},
    {"personal top level", top_level_personal.dump(), "operator_email", "unknown field"},
  };
  for (const auto& r : rows) {
    std::string what = r.what;
    CAPTURE(what);
    auto out = decode_snapshot_chunk(r.text);
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().field == r.field);
    CHECK(out.error().message.find(r.part) != std::string::npos);
    // An error never echoes a credential identifier back.
    CHECK(out.error().message.find("X1") == std::string::npos);
  }
}

TEST_CASE("credentials: deltas decode and refuse a version that does not advance") {
  json d = {{"schema", "lockbridge/credentials-delta/1"}, {"id", "cmd-2"}, {"base_version", 7},
            {"version", 8},  {"revoke", {"04A1"}},       {"delete", {"05B2"}},
            {"upsert", {cred_json("06C3")}}};
  auto out = decode_credential_delta(d.dump());
  REQUIRE(out.ok());
  CHECK(out->revoke == std::vector<std::string>{"04A1"});
  CHECK(out->remove == std::vector<std::string>{"05B2"});
  REQUIRE(out->upsert.size() == 1);
  CHECK(out->upsert[0].value.version == 8);
  d["version"] = 7;
  auto bad = decode_credential_delta(d.dump());
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().field == "version");
  d["version"] = 6;
  CHECK(decode_credential_delta(d.dump()).error().field == "version");
  // version == base_version with no change: a confirmation that the set is current.
  json confirm = {{"schema", "lockbridge/credentials-delta/1"}, {"id", "cmd-3"},
                  {"base_version", 7}, {"version", 7}};
  CHECK(decode_credential_delta(confirm.dump()).ok());
  CHECK(command_id_of(d.dump()) == "cmd-2");
  CHECK_FALSE(command_id_of("{\"id\":\"a/b\"}").has_value());
}

TEST_CASE("credentials: access requests decode; bad ones name the field") {
  auto ok = json::to_cbor(json{{"cred", "04A1"}, {"door", "front"}, {"ts", 1700000000000}});
  auto out = decode_access_request(ok);
  REQUIRE(out.ok());
  CHECK(out->cred == "04A1");
  CHECK(out->door == "front");
  auto no_door = json::to_cbor(json{{"cred", "04A1"}, {"ts", 1}});
  CHECK(decode_access_request(no_door).error().field == "door");
  auto name = json::to_cbor(json{{"cred", "04A1"}, {"door", "front"}, {"ts", 1}, {"name", "A"}});
  CHECK(decode_access_request(name).error().field == "name");
  auto ts_text = json::to_cbor(json{{"cred", "04A1"}, {"door", "front"}, {"ts", "now"}});
  CHECK(decode_access_request(ts_text).error().field == "ts");
}

TEST_CASE("credentials: decisions and their reasons") {
  const auto& rome = *date::locate_zone("Europe/Rome");
  credential c;
  c.subject = "s";
  c.doors = {"front"};
  c.valid_from = time_bound{false, local_ms("Europe/Rome", 2026, 1, 1, 0, 0)};
  c.valid_until = time_bound{true, *parse_local_datetime("2026-12-31T00:00")};
  auto now = local_ms("Europe/Rome", 2026, 6, 1, 12, 0);
  CHECK(decide(nullptr, "front", now, rome).reason == access_reason::unknown_credential);
  CHECK(decide(&c, "front", now, rome) == access_decision{true, access_reason::allowed,
                                                          local_ms("Europe/Rome", 2026, 12, 31, 0, 0)});
  CHECK(decide(&c, "back", now, rome).reason == access_reason::wrong_door);
  CHECK(decide(&c, "front", local_ms("Europe/Rome", 2025, 12, 31, 23, 59), rome).reason
        == access_reason::not_yet_valid);
  auto revoked = c;
  revoked.revoked = true;
  CHECK(decide(&revoked, "front", now, rome).reason == access_reason::revoked);
  auto star = c;
  star.doors = {"*"};
  CHECK(decide(&star, "back", now, rome).allow);
}

TEST_CASE("credentials: a validity that ends at local midnight, across DST") {
  // Europe/Rome moves to summer time at 02:00 on 2026-03-29: the day before
  // has 24 hours, midnight local is 23:00 UTC on the 28th.
  const auto& rome = *date::locate_zone("Europe/Rome");
  credential c;
  c.subject = "s";
  c.doors = {"front"};
  c.valid_until = time_bound{true, *parse_local_datetime("2026-03-29T00:00")};
  CHECK(decide(&c, "front", local_ms("Europe/Rome", 2026, 3, 28, 23, 59), rome).allow);
  auto at_midnight = decide(&c, "front", local_ms("Europe/Rome", 2026, 3, 29, 0, 0), rome);
  CHECK(at_midnight.reason == access_reason::expired);
  CHECK(local_ms("Europe/Rome", 2026, 3, 29, 0, 0) == 1774738800000); // 2026-03-28T23:00Z
}

TEST_CASE("credentials: weekly schedules follow local time across both DST changes") {
  credential c;
  c.subject = "s";
  c.doors = {"front"};
  // Weekdays... and Sundays (both 2026 European changes fall on a Sunday),
  // 08:00 to 18:00 local.
  c.schedule = {{0x1f | 0x40, 8 * 60, 18 * 60}};
  struct probe {
    const char* zone;
    int y;
    unsigned mo, d;
    int h, mi;
    bool allow;
  };
  const probe probes[] = {
    // Rome, spring forward (2026-03-29 02:00 -> 03:00): local 07:59 shut, 08:00 open.
    {"Europe/Rome", 2026, 3, 29, 7, 59, false},
    {"Europe/Rome", 2026, 3, 29, 8, 0, true},
    {"Europe/Rome", 2026, 3, 29, 17, 59, true},
    {"Europe/Rome", 2026, 3, 29, 18, 0, false},
    // Rome, fall back (2026-10-25 03:00 -> 02:00).
    {"Europe/Rome", 2026, 10, 25, 7, 59, false},
    {"Europe/Rome", 2026, 10, 25, 8, 0, true},
    {"Europe/Rome", 2026, 10, 25, 18, 0, false},
    // The Saturday before is not in the schedule.
    {"Europe/Rome", 2026, 10, 24, 12, 0, false},
    // New York, spring forward (2026-03-08 02:00 -> 03:00).
    {"America/New_York", 2026, 3, 8, 7, 59, false},
    {"America/New_York", 2026, 3, 8, 8, 0, true},
    {"America/New_York", 2026, 3, 8, 18, 0, false},
  };
  for (const auto& p : probes) {
    CAPTURE(p.zone);
    CAPTURE(p.mo);
    CAPTURE(p.d);
    CAPTURE(p.h);
    CAPTURE(p.mi);
    auto d = decide(&c, "front", local_ms(p.zone, p.y, p.mo, p.d, p.h, p.mi),
                    *date::locate_zone(p.zone));
    CHECK(d.allow == p.allow);
    if (!p.allow)
      CHECK(d.reason == access_reason::outside_schedule);
    else
      CHECK(d.until == local_ms(p.zone, p.y, p.mo, p.d, 18, 0));
  }
  // The same UTC instant is inside the window in Rome and outside in New York.
  auto instant = local_ms("Europe/Rome", 2026, 3, 30, 9, 0); // 03:00 in New York
  CHECK(decide(&c, "front", instant, *date::locate_zone("Europe/Rome")).allow);
  CHECK_FALSE(decide(&c, "front", instant, *date::locate_zone("America/New_York")).allow);
}

TEST_CASE("credentials: the answer to the lock is {allow, reason, until?}") {
  auto bytes = encode_access_answer({true, access_reason::allowed, 1700000000000});
  auto doc = json::from_cbor(bytes);
  CHECK(doc["allow"] == true);
  CHECK(doc["reason"] == "allowed");
  CHECK(doc["until"] == 1700000000000);
  auto denied = json::from_cbor(encode_access_answer({false, access_reason::stale_store, {}}));
  CHECK(denied["allow"] == false);
  CHECK(denied["reason"] == "stale_store");
  CHECK_FALSE(denied.contains("until"));
}

}

TEST_SUITE("protocols") {

TEST_CASE("privacy commands: erase_subject and rotate_keys decode, bad ones name the field") {
  auto e = decode_erase_subject(
    R"({"schema":"lockbridge/erase-subject/1","id":"e-1","subject":"sub-8812"})");
  REQUIRE(e);
  CHECK(e->subject == "sub-8812");
  auto r = decode_rotate_keys(R"({"schema":"lockbridge/rotate-keys/1","id":"r-1","data_key":true})");
  REQUIRE(r);
  CHECK(r->data_key);
  CHECK_FALSE(r->pseudonym_epoch);
  struct row {
    bool erase;
    std::string json, field;
  };
  std::vector<row> rows{
    {true, R"({"schema":"lockbridge/erase-subject/1","id":"e-1"})", "subject"},
    {true, R"({"schema":"lockbridge/erase-subject/1","id":"e-1","subject":"a b"})", "subject"},
    {true, R"({"schema":"lockbridge/erase-subject/1","id":"e-1","subject":"s","email":"x@y"})",
     "email"},
    {true, R"({"schema":"other","id":"e-1","subject":"s"})", "schema"},
    {true, "not json", ""},
    {false, R"({"schema":"lockbridge/rotate-keys/1","id":"r-1"})", ""},
    {false, R"({"schema":"lockbridge/rotate-keys/1","id":"r-1","data_key":"yes"})", "data_key"},
    {false, R"({"schema":"lockbridge/rotate-keys/1","id":"r 1","data_key":true})", "id"},
  };
  for (const auto& row : rows) {
    CAPTURE(row.json);
    auto field = row.erase ? decode_erase_subject(row.json).error().field
                           : decode_rotate_keys(row.json).error().field;
    CHECK(field == row.field);
  }
}

}
