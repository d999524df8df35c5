#include "protocols/cloud_messages.hpp"

#include "protocols/json_input.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "protocols/cbor.hpp"

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
  std::vector<std::uint8_t> out;
  out.reserve(64 + r.lock.size() + r.type.size() + r.door.size()
              + (r.cred ? r.cred->size() : 0) + (r.detail ? r.detail->size() : 0));
  cbor::writer w{out};
  // One-letter keys in sorted order: the same bytes nlohmann's to_cbor wrote
  // for schema version 1.
  w.map(6 + (r.cred ? 1 : 0) + (r.detail ? 1 : 0));
  if (r.cred) {
    w.text("c");
    w.text(*r.cred);
  }
  w.text("d");
  w.text(r.door);
  w.text("l");
  w.text(r.lock);
  w.text("r");
  w.integer(r.received_at);
  w.text("s");
  w.unsigned_integer(r.seq);
  w.text("t");
  w.integer(r.ts);
  if (r.detail) {
    w.text("x");
    w.text(*r.detail);
  }
  w.text("y");
  w.text(r.type);
  return out;
}

result<journal_record> decode_record(std::span<const std::uint8_t> bytes) {
  auto damaged = [](std::string what) {
    return input_error{"", "journal record damaged: " + std::move(what)};
  };
  cbor::reader in{bytes};
  auto map = in.next();
  if (!map || map->type != cbor::major::map || map->indefinite || map->argument > 8)
    return damaged("not a map of at most 8 entries");
  journal_record r;
  unsigned seen = 0;
  for (std::uint64_t i = 0; i < map->argument; ++i) {
    auto key_head = in.next();
    auto key = key_head ? in.text(*key_head) : std::nullopt;
    if (!key || key->size() != 1)
      return damaged("bad key");
    auto value = in.next();
    if (!value)
      return damaged("truncated");
    char k = (*key)[0];
    if (k < 'a' || k > 'z' || (seen & (1u << (k - 'a'))) != 0)
      return damaged(std::string{"unexpected or repeated key "} + k);
    seen |= 1u << (k - 'a');
    auto as_int = [&](std::int64_t& out) {
      if (value->type == cbor::major::unsigned_integer && value->argument <= INT64_MAX)
        out = static_cast<std::int64_t>(value->argument);
      else if (value->type == cbor::major::negative_integer && value->argument <= INT64_MAX)
        out = -1 - static_cast<std::int64_t>(value->argument);
      else
        return false;
      return true;
    };
    auto as_text = [&](std::string& out) {
      auto t = in.text(*value);
      if (!t)
        return false;
      out.assign(*t);
      return true;
    };
    bool ok = false;
    switch (k) {
    case 'l': ok = as_text(r.lock); break;
    case 's':
      ok = value->type == cbor::major::unsigned_integer;
      r.seq = value->argument;
      break;
    case 't': ok = as_int(r.ts); break;
    case 'y': ok = as_text(r.type); break;
    case 'd': ok = as_text(r.door); break;
    case 'r': ok = as_int(r.received_at); break;
    case 'c': ok = as_text(r.cred.emplace()); break;
    case 'x': ok = as_text(r.detail.emplace()); break;
    default: break;
    }
    if (!ok)
      return damaged(std::string{"bad value for key "} + k);
  }
  for (char k : {'l', 's', 't', 'y', 'd', 'r'})
    if ((seen & (1u << (k - 'a'))) == 0)
      return damaged(std::string{"missing key "} + k);
  if (!in.at_end())
    return damaged("trailing bytes");
  return r;
}

std::string event_id(std::string_view gateway, std::string_view lock, std::uint64_t seq) {
  std::string id;
  id.reserve(gateway.size() + lock.size() + 22);
  id.append(gateway).append("/").append(lock).append("/").append(std::to_string(seq));
  return id;
}

namespace {

/// Appends `text` as a JSON string. Valid UTF-8 passes through; control
/// characters are escaped; a byte that is not part of valid UTF-8 (never
/// expected: ingest checks) becomes U+FFFD rather than invalid JSON.
void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0; // start of the pending run of plain bytes
  auto flush = [&](std::size_t upto) { out.append(text.substr(run, upto - run)); };
  for (std::size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      std::size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
      if (len > 1 && i + len <= text.size() && cbor::is_valid_utf8(text.substr(i, len))) {
        i += len;
        continue;
      }
      flush(i);
      out += "\\ufffd";
      run = ++i;
      continue;
    }
    flush(i);
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
    run = ++i;
  }
  flush(text.size());
  out += '"';
}

void append_json_field(std::string& out, std::string_view name, std::string_view value) {
  out += '"';
  out += name;
  out += "\":";
  append_json_string(out, value);
}

void append_json_field(std::string& out, std::string_view name, std::int64_t value) {
  out += '"';
  out += name;
  out += "\":";
  out += std::to_string(value);
}

} // namespace

std::string encode_events(std::string_view site, std::string_view gateway,
                          std::span<const journal_record> records) {
  // Written by hand rather than through a JSON DOM: this runs once per
  // published message and was a fifth of the uplink's CPU.
  std::string out;
  out.reserve(96 + records.size() * 320);
  out += "{";
  append_json_field(out, "schema", events_schema);
  out += ',';
  append_json_field(out, "site", site);
  out += ',';
  append_json_field(out, "gateway", gateway);
  out += ",\"events\":[";
  bool first = true;
  for (const auto& r : records) {
    out += first ? "{" : ",{";
    first = false;
    append_json_field(out, "event_id", event_id(gateway, r.lock, r.seq));
    out += ',';
    append_json_field(out, "lock", r.lock);
    out += ",\"seq\":";
    out += std::to_string(r.seq);
    out += ',';
    append_json_field(out, "ts", r.ts);
    out += ',';
    append_json_field(out, "type", r.type);
    out += ',';
    append_json_field(out, "door", r.door);
    if (r.cred) {
      out += ',';
      append_json_field(out, "cred", *r.cred);
    }
    if (r.detail) {
      out += ',';
      append_json_field(out, "detail", *r.detail);
    }
    out += ',';
    append_json_field(out, "received_at", r.received_at);
    out += '}';
  }
  out += "]}";
  return out;
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
      {"duplicates", s.journal.duplicates},
      {"commits", s.journal.commits}}},
  };
  if (s.client_cert_expires_at) {
    auto left_ms = *s.client_cert_expires_at - s.now;
    auto days_left = left_ms < 0 ? -((-left_ms) / 86400000 + 1) : left_ms / 86400000;
    doc["tls"] = {{"client_cert_expires_at", *s.client_cert_expires_at},
                  {"client_cert_days_left", days_left},
                  {"expiring_soon", days_left < static_cast<std::int64_t>(s.cert_warning_days)}};
  }
  if (s.credentials) {
    const auto& c = *s.credentials;
    doc["credentials"] = {{"count", c.count},
                          {"version", c.version},
                          {"synced_at", c.synced_at},
                          {"stale", c.stale},
                          {"decisions", c.decisions},
                          {"denied_stale", c.denied_stale},
                          {"clock_behind_ms", c.clock_behind_ms}};
  }
  if (s.health) {
    const auto& h = *s.health;
    auto rate = [](double v) { return static_cast<double>(static_cast<std::int64_t>(v * 10)) / 10; };
    doc["health"] = {{"uptime_s", h.uptime_s},
                     {"locks_available", h.locks_available},
                     {"events_per_s", {{"in", rate(h.events_in_per_s)},
                                       {"out", rate(h.events_out_per_s)}}},
                     {"oldest_pending_age_s", h.oldest_pending_age_s},
                     {"worker_stall_ms", h.worker_stall_ms}};
  }
  if (s.tls_problem)
    doc["tls_problem"] = *s.tls_problem;
  if (s.broker_refusals)
    doc["broker_refusals"] = {{"count", s.broker_refusals->count},
                              {"last_reason_code", s.broker_refusals->last_reason_code},
                              {"last_at", s.broker_refusals->last_at}};
  if (s.storage) {
    const auto& g = *s.storage;
    doc["storage"] = {{"ok", g.ok}, {"faults", g.faults}};
    if (!g.ok)
      doc["storage"]["error"] = g.error, doc["storage"]["since"] = g.since;
  }
  if (s.ble) {
    const auto& b = *s.ble;
    doc["ble"] = {{"connections", b.connections},
                  {"connect_failures", b.connect_failures},
                  {"connected_now", b.connected_now},
                  {"peak_connected", b.peak_connected},
                  {"messages", b.messages},
                  {"refused_forged", b.refused_forged},
                  {"refused_replayed", b.refused_replayed},
                  {"refused_unconfigured", b.refused_unconfigured},
                  {"bad_messages", b.bad_messages},
                  {"fragments_dropped", b.fragments_dropped}};
  }
  if (s.coap) {
    const auto& c = *s.coap;
    doc["coap"] = {{"sessions", c.sessions},
                   {"peak_sessions", c.peak_sessions},
                   {"max_sessions", c.max_sessions},
                   {"session_refusals", c.session_refusals},
                   {"sessions_released", c.sessions_released},
                   {"handshake_refusals", c.handshake_refusals},
                   {"wrong_key_handshakes", c.wrong_key_handshakes},
                   {"requests", c.requests},
                   {"bad_requests", c.bad_requests}};
  }
  if (s.privacy) {
    const auto& p = *s.privacy;
    doc["privacy"] = {
      {"pseudonym_epoch", p.pseudonym_epoch},
      {"pseudonym_epochs_live", p.pseudonym_epochs_live},
      {"pseudonym_epoch_since", p.pseudonym_epoch_since},
      {"data_key", p.data_key},
      {"data_keys_live", p.data_keys_live},
      {"resealing", p.resealing},
      {"quarantined", p.quarantined},
      {"quarantined_since_start", p.quarantined_since_start},
      {"audit_pending", p.audit_pending},
      {"audit_next_seq", p.audit_next_seq},
      {"retention_days", p.retention_days},
      {"purged", {{"journal", s.journal.purged_retention},
                  {"audit", p.audit_purged},
                  {"quarantine", p.quarantine_purged}}},
      {"epochs_destroyed", p.epochs_destroyed},
      {"erasures", p.erasures}};
  }
  return dump_safe(doc);
}

std::string encode_offline_will(std::string_view site, std::string_view gateway) {
  json doc = {{"schema", status_schema},
              {"site", site},
              {"gateway", gateway},
              {"state", "offline"}};
  return dump_safe(doc);
}

} // namespace lockbridge::protocol
