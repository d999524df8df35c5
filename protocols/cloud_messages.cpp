#include "protocols/cloud_messages.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "protocols/cbor_input.hpp"

namespace lockbridge::protocol {

using nlohmann::json;

bool is_valid_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || c == '_' || c == '-';
  });
}

topics::topics(std::string site, std::string gateway)
  : prefix_("lockbridge/v1/" + site + "/" + gateway + "/") {}

std::string topics::lock_state(std::string_view lock) const {
  return prefix_ + "locks/" + std::string{lock} + "/state";
}

std::string topics::command(std::string_view name) const {
  return prefix_ + "cmd/" + std::string{name};
}

std::vector<std::uint8_t> encode_record(const journal_record& r) {
  json doc = {{"l", r.lock}, {"s", r.seq}, {"t", r.ts},         {"y", r.type},
              {"d", r.door}, {"r", r.received_at}};
  if (r.cred)
    doc["c"] = *r.cred;
  if (r.detail)
    doc["x"] = *r.detail;
  return json::to_cbor(doc);
}

result<journal_record> decode_record(std::span<const std::uint8_t> bytes) {
  auto doc = parse_cbor(bytes, 2);
  if (!doc)
    return doc.error();
  if (!doc->is_object())
    return input_error{"", "journal record is not a map"};
  try {
    journal_record r;
    r.lock = doc->at("l").get<std::string>();
    r.seq = doc->at("s").get<std::uint64_t>();
    r.ts = doc->at("t").get<std::int64_t>();
    r.type = doc->at("y").get<std::string>();
    r.door = doc->at("d").get<std::string>();
    r.received_at = doc->at("r").get<std::int64_t>();
    if (auto it = doc->find("c"); it != doc->end())
      r.cred = it->get<std::string>();
    if (auto it = doc->find("x"); it != doc->end())
      r.detail = it->get<std::string>();
    return r;
  } catch (const json::exception& e) {
    return input_error{"", std::string{"journal record damaged: "} + e.what()};
  }
}

std::string event_id(std::string_view gateway, std::string_view lock, std::uint64_t seq) {
  std::string id;
  id.reserve(gateway.size() + lock.size() + 22);
  id.append(gateway).append("/").append(lock).append("/").append(std::to_string(seq));
  return id;
}

std::string encode_events(std::string_view site, std::string_view gateway,
                          std::span<const journal_record> records) {
  json events = json::array();
  for (const auto& r : records) {
    json ev = {{"event_id", event_id(gateway, r.lock, r.seq)},
               {"lock", r.lock},
               {"seq", r.seq},
               {"ts", r.ts},
               {"type", r.type},
               {"door", r.door},
               {"received_at", r.received_at}};
    if (r.cred)
      ev["cred"] = *r.cred;
    if (r.detail)
      ev["detail"] = *r.detail;
    events.push_back(std::move(ev));
  }
  json doc = {{"schema", events_schema},
              {"site", site},
              {"gateway", gateway},
              {"events", std::move(events)}};
  return doc.dump();
}

std::string encode_status(const gateway_status& s) {
  json doc = {
    {"schema", status_schema},
    {"site", s.site},
    {"gateway", s.gateway},
    {"state", s.online ? "online" : "offline"},
    {"version", s.version},
    {"started_at", s.started_at},
    {"ts", s.now},
    {"locks", {{"configured", s.locks_configured}}},
    {"events", {{"in", s.journal.stored}, {"out", s.events_out}}},
    {"journal",
     {{"depth", s.journal.depth},
      {"bytes", s.journal.bytes},
      {"limit_bytes", s.journal.limit_bytes},
      {"oldest_received_at", s.journal.oldest_received_at},
      {"refused_full", s.journal.refused_full},
      {"purged_retention", s.journal.purged_retention},
      {"duplicates", s.journal.duplicates}}},
  };
  return doc.dump();
}

std::string encode_offline_will(std::string_view site, std::string_view gateway) {
  json doc = {{"schema", status_schema},
              {"site", site},
              {"gateway", gateway},
              {"state", "offline"}};
  return doc.dump();
}

} // namespace lockbridge::protocol
