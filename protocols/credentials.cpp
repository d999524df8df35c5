#include "protocols/credentials.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <set>
#include <unordered_map>

#include <date/tz.h>
#include <nlohmann/json.hpp>

#include "protocols/cbor.hpp"
#include "protocols/cloud_messages.hpp"
#include "protocols/json_input.hpp"

namespace lockbridge::protocol {

namespace {

using nlohmann::json;

constexpr std::string_view snapshot_schema = "lockbridge/credentials-snapshot/1";
constexpr std::string_view delta_schema = "lockbridge/credentials-delta/1";
constexpr std::string_view result_schema = "lockbridge/cmd-result/1";
constexpr std::string_view erase_schema = "lockbridge/erase-subject/1";
constexpr std::string_view rotate_schema = "lockbridge/rotate-keys/1";

constexpr const char* day_names[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

// -- stored form ---------------------------------------------------------------

void write_bound(cbor::writer& w, char key, const std::optional<time_bound>& b) {
  if (!b)
    return;
  // Lower-case key: an instant (Unix ms); upper-case: a local date-time.
  char k[2] = {b->local ? static_cast<char>(key - 'a' + 'A') : key, 0};
  w.text(k);
  w.integer(b->value);
}

} // namespace

std::vector<std::uint8_t> encode_credential(const credential& c) {
  std::vector<std::uint8_t> out;
  out.reserve(48 + c.subject.size() + c.doors.size() * 12 + c.schedule.size() * 8);
  cbor::writer w{out};
  w.map(3 + (c.valid_from ? 1 : 0) + (c.valid_until ? 1 : 0) + (c.schedule.empty() ? 0 : 1)
        + (c.revoked ? 1 : 0));
  w.text("s");
  w.text(c.subject);
  w.text("d");
  w.array(c.doors.size());
  for (const auto& d : c.doors)
    w.text(d);
  write_bound(w, 'f', c.valid_from);
  write_bound(w, 'u', c.valid_until);
  if (!c.schedule.empty()) {
    w.text("w");
    w.array(c.schedule.size());
    for (const auto& win : c.schedule) {
      w.array(3);
      w.unsigned_integer(win.days);
      w.unsigned_integer(win.from_minute);
      w.unsigned_integer(win.to_minute);
    }
  }
  if (c.revoked) {
    w.text("r");
    w.boolean(true);
  }
  w.text("v");
  w.unsigned_integer(c.version);
  return out;
}

result<credential> decode_credential(std::span<const std::uint8_t> bytes) {
  auto damaged = [](std::string what) {
    return input_error{"", "credential record damaged: " + std::move(what)};
  };
  cbor::reader in{bytes};
  auto map = in.next();
  if (!map || map->type != cbor::major::map || map->indefinite || map->argument > 16)
    return damaged("not a map");
  credential c;
  auto read_uint = [&](std::uint64_t max) -> std::optional<std::uint64_t> {
    auto h = in.next();
    if (!h || h->type != cbor::major::unsigned_integer || h->argument > max)
      return std::nullopt;
    return h->argument;
  };
  auto read_text = [&]() -> std::optional<std::string> {
    auto h = in.next();
    if (!h)
      return std::nullopt;
    auto t = in.text(*h);
    if (!t)
      return std::nullopt;
    return std::string{*t};
  };
  auto read_int = [&]() -> std::optional<std::int64_t> {
    auto h = in.next();
    if (!h || h->argument > INT64_MAX)
      return std::nullopt;
    if (h->type == cbor::major::unsigned_integer)
      return static_cast<std::int64_t>(h->argument);
    if (h->type == cbor::major::negative_integer)
      return -1 - static_cast<std::int64_t>(h->argument);
    return std::nullopt;
  };
  bool has_subject = false, has_version = false;
  std::uint32_t seen = 0;
  for (std::uint64_t i = 0; i < map->argument; ++i) {
    auto key = read_text();
    if (!key || key->size() != 1)
      return damaged("bad key");
    // Each field once: a repeated one would be merged (two door lists) into a
    // value that no longer encodes back to what was stored.
    static constexpr std::string_view fields = "sdfuwrv";
    auto field = fields.find(static_cast<char>(std::tolower(static_cast<unsigned char>((*key)[0]))));
    if (field != std::string_view::npos) {
      if (seen & (1u << field))
        return damaged("field " + *key + " appears twice");
      seen |= 1u << field;
    }
    switch ((*key)[0]) {
    case 's': {
      auto v = read_text();
      if (!v)
        return damaged("bad subject");
      c.subject = std::move(*v);
      has_subject = true;
      break;
    }
    case 'd': {
      auto h = in.next();
      if (!h || h->type != cbor::major::array || h->indefinite
          || h->argument > credential_limits::max_doors)
        return damaged("bad doors");
      for (std::uint64_t k = 0; k < h->argument; ++k) {
        auto v = read_text();
        if (!v)
          return damaged("bad door");
        c.doors.push_back(std::move(*v));
      }
      break;
    }
    case 'f':
    case 'F':
    case 'u':
    case 'U': {
      auto v = read_int();
      if (!v)
        return damaged("bad validity bound");
      time_bound b{(*key)[0] == 'F' || (*key)[0] == 'U', *v};
      ((*key)[0] == 'f' || (*key)[0] == 'F' ? c.valid_from : c.valid_until) = b;
      break;
    }
    case 'w': {
      auto h = in.next();
      if (!h || h->type != cbor::major::array || h->indefinite
          || h->argument > credential_limits::max_windows)
        return damaged("bad schedule");
      for (std::uint64_t k = 0; k < h->argument; ++k) {
        auto triple = in.next();
        if (!triple || triple->type != cbor::major::array || triple->argument != 3)
          return damaged("bad window");
        auto days = read_uint(127), from = read_uint(1439), to = read_uint(1440);
        if (!days || !from || !to)
          return damaged("bad window");
        c.schedule.push_back({static_cast<std::uint8_t>(*days),
                              static_cast<std::uint16_t>(*from),
                              static_cast<std::uint16_t>(*to)});
      }
      break;
    }
    case 'r': {
      auto h = in.next();
      if (!h || h->type != cbor::major::simple || (h->info != 20 && h->info != 21))
        return damaged("bad revoked flag");
      c.revoked = h->info == 21;
      break;
    }
    case 'v': {
      auto v = read_uint(UINT64_MAX);
      if (!v)
        return damaged("bad version");
      c.version = *v;
      has_version = true;
      break;
    }
    default:
      return damaged("unknown key");
    }
  }
  if (!has_subject || !has_version || !in.at_end())
    return damaged("incomplete");
  return c;
}

// -- cloud sync messages (JSON; cold path, so nlohmann's DOM) -------------------

namespace {

class json_reader {
public:
  /// Parses `text`; on failure `error` is set.
  explicit json_reader(std::string_view text) {
    auto parsed = parse_json_input(text, credential_limits::max_message_bytes, 8);
    if (parsed)
      doc = std::move(*parsed);
    else
      error = parsed.error();
  }

  json doc;
  std::optional<input_error> error;
};

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string{key} : path + "." + std::string{key};
}

/// Refuses any key not in `known`: the cloud must never send personal data
/// (a name, an e-mail) and a typo must not be silently ignored.
std::optional<input_error> only_known(const json& obj, const std::string& path,
                                      std::initializer_list<std::string_view> known,
                                      std::string_view what) {
  for (const auto& [key, _] : obj.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      return input_error{join(path, key),
                         "unknown field; " + std::string{what}
                           + " (personal data such as names or e-mail addresses is never "
                             "accepted)"};
  return std::nullopt;
}

result<std::string> get_text(const json& obj, const std::string& path, std::string_view key,
                             std::size_t max_length, bool ids_only) {
  auto field = join(path, key);
  auto it = obj.find(key);
  if (it == obj.end())
    return input_error{field, "missing; expected a string"};
  if (!it->is_string())
    return input_error{field, std::string{"expected a string, got "} + it->type_name()};
  const auto& s = it->get_ref<const std::string&>();
  if (s.empty() || s.size() > max_length)
    return input_error{field, "expected 1 to " + std::to_string(max_length) + " bytes, got "
                                + std::to_string(s.size())};
  if (ids_only && !is_valid_id(s))
    return input_error{field, "expected 1-64 of A-Z a-z 0-9 _ -"};
  return s;
}

result<std::uint64_t> get_unsigned(const json& obj, const std::string& path,
                                   std::string_view key) {
  auto field = join(path, key);
  auto it = obj.find(key);
  if (it == obj.end())
    return input_error{field, "missing; expected an unsigned integer"};
  if (!it->is_number_unsigned())
    return input_error{field, std::string{"expected an unsigned integer, got "}
                                + (it->is_number_integer() ? "a negative number" : it->type_name())};
  return it->get<std::uint64_t>();
}

std::optional<input_error> check_schema(const json& doc, std::string_view expected) {
  auto it = doc.find("schema");
  if (it == doc.end())
    return input_error{"schema", "missing; expected \"" + std::string{expected} + "\""};
  if (!it->is_string() || it->get_ref<const std::string&>() != expected)
    return input_error{"schema", "expected \"" + std::string{expected} + "\""};
  return std::nullopt;
}

result<std::optional<time_bound>> get_bound(const json& obj, const std::string& path,
                                            std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return std::optional<time_bound>{};
  auto field = join(path, key);
  if (it->is_number_integer()) {
    // Range-checked before it is made signed: 1970 to the end of 9999.
    if (!it->is_number_unsigned() || it->get<std::uint64_t>() > 253402300799999)
      return input_error{field, "expected Unix milliseconds from 1970 to the year 9999"};
    return std::optional<time_bound>{
      time_bound{false, static_cast<std::int64_t>(it->get<std::uint64_t>())}};
  }
  if (it->is_string()) {
    auto local = parse_local_datetime(it->get_ref<const std::string&>());
    if (!local)
      return input_error{field, "expected Unix milliseconds or a local date-time "
                                "\"YYYY-MM-DDTHH:MM[:SS]\" in the site's time zone"};
    return std::optional<time_bound>{time_bound{true, *local}};
  }
  return input_error{field, std::string{"expected Unix milliseconds or a local date-time, got "}
                              + it->type_name()};
}

result<credential_update> get_credential(const json& item, const std::string& path,
                                         std::uint64_t version) {
  if (!item.is_object())
    return input_error{path, std::string{"expected an object, got "} + item.type_name()};
  if (auto e = only_known(item, path,
                          {"cred", "subject", "doors", "valid_from", "valid_until", "schedule",
                           "revoked"},
                          "expected cred, subject, doors, valid_from, valid_until, schedule, "
                          "revoked"))
    return *e;
  credential_update u;
  auto cred = get_text(item, path, "cred", credential_limits::max_cred_length, false);
  if (!cred)
    return cred.error();
  u.cred = std::move(*cred);
  auto subject = get_text(item, path, "subject", credential_limits::max_subject_length, true);
  if (!subject)
    return subject.error();
  u.value.subject = std::move(*subject);
  auto doors = item.find("doors");
  if (doors == item.end())
    return input_error{join(path, "doors"), "missing; expected an array of door ids or \"*\""};
  if (!doors->is_array() || doors->empty() || doors->size() > credential_limits::max_doors)
    return input_error{join(path, "doors"), "expected an array of 1 to "
                                              + std::to_string(credential_limits::max_doors)
                                              + " door ids"};
  for (std::size_t i = 0; i < doors->size(); ++i) {
    const auto& d = (*doors)[i];
    auto field = join(path, "doors[" + std::to_string(i) + "]");
    if (!d.is_string())
      return input_error{field, std::string{"expected a string, got "} + d.type_name()};
    const auto& s = d.get_ref<const std::string&>();
    if (s != "*" && !is_valid_id(s))
      return input_error{field, "expected a door id (1-64 of A-Z a-z 0-9 _ -) or \"*\""};
    u.value.doors.push_back(s);
  }
  auto from = get_bound(item, path, "valid_from");
  if (!from)
    return from.error();
  u.value.valid_from = *from;
  auto until = get_bound(item, path, "valid_until");
  if (!until)
    return until.error();
  u.value.valid_until = *until;
  if (from->has_value() && until->has_value() && (*from)->local == (*until)->local
      && (*from)->value >= (*until)->value)
    return input_error{join(path, "valid_until"), "must be after valid_from"};
  if (auto sched = item.find("schedule"); sched != item.end()) {
    if (!sched->is_array() || sched->size() > credential_limits::max_windows)
      return input_error{join(path, "schedule"),
                         "expected an array of at most "
                           + std::to_string(credential_limits::max_windows) + " windows"};
    for (std::size_t i = 0; i < sched->size(); ++i) {
      const auto& w = (*sched)[i];
      auto wpath = join(path, "schedule[" + std::to_string(i) + "]");
      if (!w.is_object())
        return input_error{wpath, std::string{"expected an object, got "} + w.type_name()};
      if (auto e = only_known(w, wpath, {"days", "from", "to"}, "expected days, from, to"))
        return *e;
      weekly_window win;
      auto days = w.find("days");
      if (days == w.end() || !days->is_array() || days->empty())
        return input_error{join(wpath, "days"),
                           "expected an array of mon, tue, wed, thu, fri, sat, sun"};
      for (const auto& d : *days) {
        auto name = d.is_string() ? d.get<std::string>() : std::string{};
        auto it = std::find(std::begin(day_names), std::end(day_names), name);
        if (it == std::end(day_names))
          return input_error{join(wpath, "days"),
                             "expected an array of mon, tue, wed, thu, fri, sat, sun"};
        win.days |= static_cast<std::uint8_t>(1u << (it - std::begin(day_names)));
      }
      for (auto [key, target] : {std::pair{"from", &win.from_minute}, {"to", &win.to_minute}}) {
        auto it = w.find(key);
        auto minutes = it != w.end() && it->is_string()
                         ? parse_clock(it->get_ref<const std::string&>())
                         : std::nullopt;
        if (!minutes)
          return input_error{join(wpath, key), "expected a local time \"HH:MM\" (00:00-24:00)"};
        *target = *minutes;
      }
      if (win.from_minute >= win.to_minute || win.from_minute >= 1440)
        return input_error{join(wpath, "to"), "must be after from (use 24:00 for midnight at "
                                              "the end of the day)"};
      u.value.schedule.push_back(win);
    }
  }
  if (auto revoked = item.find("revoked"); revoked != item.end()) {
    if (!revoked->is_boolean())
      return input_error{join(path, "revoked"), std::string{"expected true or false, got "}
                                                  + revoked->type_name()};
    u.value.revoked = revoked->get<bool>();
  }
  u.value.version = version;
  return u;
}

result<std::vector<std::string>> get_cred_list(const json& doc, std::string_view key) {
  std::vector<std::string> out;
  auto it = doc.find(key);
  if (it == doc.end())
    return out;
  auto field = std::string{key};
  if (!it->is_array() || it->size() > credential_limits::max_per_chunk)
    return input_error{field, "expected an array of at most "
                                + std::to_string(credential_limits::max_per_chunk)
                                + " credential identifiers"};
  for (std::size_t i = 0; i < it->size(); ++i) {
    const auto& c = (*it)[i];
    if (!c.is_string() || c.get_ref<const std::string&>().empty()
        || c.get_ref<const std::string&>().size() > credential_limits::max_cred_length)
      return input_error{field + "[" + std::to_string(i) + "]",
                         "expected a credential identifier of 1 to "
                           + std::to_string(credential_limits::max_cred_length) + " bytes"};
    out.push_back(c.get<std::string>());
  }
  return out;
}

result<std::vector<credential_update>> get_credentials(const json& doc, std::string_view key,
                                                       std::uint64_t version, bool required) {
  std::vector<credential_update> out;
  auto it = doc.find(key);
  if (it == doc.end()) {
    if (required)
      return input_error{std::string{key}, "missing; expected an array of credentials"};
    return out;
  }
  if (!it->is_array() || it->size() > credential_limits::max_per_chunk)
    return input_error{std::string{key}, "expected an array of at most "
                                           + std::to_string(credential_limits::max_per_chunk)
                                           + " credentials"};
  out.reserve(it->size());
  for (std::size_t i = 0; i < it->size(); ++i) {
    auto u = get_credential((*it)[i], std::string{key} + "[" + std::to_string(i) + "]", version);
    if (!u)
      return u.error();
    out.push_back(std::move(*u));
  }
  return out;
}

/// Refuses a delta that names one credential twice (in two operations, or
/// twice in one): which one wins would depend on the order they are applied
/// in, and a revoke undone by an upsert of the same message is a mistake the
/// cloud must hear about. The positions are named, never the identifier.
std::optional<input_error> each_credential_once(const credential_delta& d) {
  std::unordered_map<std::string_view, std::string> seen;
  seen.reserve(d.revoke.size() + d.remove.size() + d.upsert.size());
  auto note = [&](std::string_view cred, std::string path) -> std::optional<input_error> {
    auto [it, fresh] = seen.emplace(cred, path);
    if (fresh)
      return std::nullopt;
    return input_error{path, "names the same credential as " + it->second
                               + "; a delta may name each credential once"};
  };
  for (std::size_t i = 0; i < d.revoke.size(); ++i)
    if (auto e = note(d.revoke[i], "revoke[" + std::to_string(i) + "]"))
      return e;
  for (std::size_t i = 0; i < d.remove.size(); ++i)
    if (auto e = note(d.remove[i], "delete[" + std::to_string(i) + "]"))
      return e;
  for (std::size_t i = 0; i < d.upsert.size(); ++i)
    if (auto e = note(d.upsert[i].cred, "upsert[" + std::to_string(i) + "].cred"))
      return e;
  return std::nullopt;
}

} // namespace

namespace {

/// Finds the top-level "id" of a JSON object without building the document,
/// and stops there: the cloud writes it near the start, before any list of
/// credentials.
class id_finder : public nlohmann::json_sax<json> {
public:
  std::optional<std::string> id;

  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool binary(binary_t&) override { return value(); }
  bool string(string_t& s) override {
    if (depth_ == 1 && at_id_) {
      if (is_valid_id(s))
        id = s;
      return false; // found: stop here
    }
    return value();
  }
  bool start_object(std::size_t) override {
    at_id_ = false;
    ++depth_;
    return true;
  }
  bool key(string_t& k) override {
    at_id_ = depth_ == 1 && k == "id";
    return true;
  }
  bool end_object() override {
    --depth_;
    return depth_ > 0; // the top-level object ended without an id
  }
  bool start_array(std::size_t) override {
    if (depth_ == 0)
      return false; // not an object
    at_id_ = false;
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

private:
  bool value() {
    if (depth_ == 0)
      return false; // not an object
    if (depth_ == 1 && at_id_)
      return false; // "id" is not a string
    at_id_ = false;
    return true;
  }

  std::size_t depth_ = 0;
  bool at_id_ = false;
};

} // namespace

std::optional<std::string> command_id_of(std::string_view text) {
  if (text.size() > credential_limits::max_message_bytes)
    return std::nullopt;
  id_finder finder;
  json::sax_parse(text, &finder, json::input_format_t::json, false);
  return std::move(finder.id);
}

result<snapshot_chunk> decode_snapshot_chunk(std::string_view text) {
  json_reader r{text};
  if (r.error)
    return *r.error;
  const auto& doc = r.doc;
  if (auto e = only_known(doc, "",
                          {"schema", "id", "snapshot", "version", "chunk", "chunks",
                           "credentials"},
                          "expected schema, id, snapshot, version, chunk, chunks, credentials"))
    return *e;
  if (auto e = check_schema(doc, snapshot_schema))
    return *e;
  snapshot_chunk c;
  auto id = get_text(doc, "", "id", 64, true);
  if (!id)
    return id.error();
  c.id = std::move(*id);
  auto snapshot = get_text(doc, "", "snapshot", 64, true);
  if (!snapshot)
    return snapshot.error();
  c.snapshot = std::move(*snapshot);
  auto version = get_unsigned(doc, "", "version");
  if (!version)
    return version.error();
  if (*version == 0)
    return input_error{"version", "expected a version of 1 or more"};
  c.version = *version;
  auto chunks = get_unsigned(doc, "", "chunks");
  if (!chunks)
    return chunks.error();
  if (*chunks == 0 || *chunks > credential_limits::max_chunks)
    return input_error{"chunks", "expected 1 to " + std::to_string(credential_limits::max_chunks)};
  c.chunks = static_cast<std::uint32_t>(*chunks);
  auto chunk = get_unsigned(doc, "", "chunk");
  if (!chunk)
    return chunk.error();
  if (*chunk == 0 || *chunk > c.chunks)
    return input_error{"chunk", "expected 1 to chunks (" + std::to_string(c.chunks) + ")"};
  c.chunk = static_cast<std::uint32_t>(*chunk);
  auto creds = get_credentials(doc, "credentials", c.version, true);
  if (!creds)
    return creds.error();
  c.credentials = std::move(*creds);
  std::unordered_map<std::string_view, std::size_t> seen;
  seen.reserve(c.credentials.size());
  for (std::size_t i = 0; i < c.credentials.size(); ++i)
    if (auto [it, fresh] = seen.emplace(c.credentials[i].cred, i); !fresh)
      return input_error{"credentials[" + std::to_string(i) + "].cred",
                         "names the same credential as credentials[" + std::to_string(it->second)
                           + "]; a chunk may name each credential once"};
  return c;
}

result<credential_delta> decode_credential_delta(std::string_view text) {
  json_reader r{text};
  if (r.error)
    return *r.error;
  const auto& doc = r.doc;
  if (auto e = only_known(doc, "",
                          {"schema", "id", "base_version", "version", "revoke", "delete",
                           "upsert"},
                          "expected schema, id, base_version, version, revoke, delete, upsert"))
    return *e;
  if (auto e = check_schema(doc, delta_schema))
    return *e;
  credential_delta d;
  auto id = get_text(doc, "", "id", 64, true);
  if (!id)
    return id.error();
  d.id = std::move(*id);
  auto base = get_unsigned(doc, "", "base_version");
  if (!base)
    return base.error();
  d.base_version = *base;
  auto version = get_unsigned(doc, "", "version");
  if (!version)
    return version.error();
  if (*version < d.base_version)
    return input_error{"version", "must not be below base_version"};
  d.version = *version;
  auto revoke = get_cred_list(doc, "revoke");
  if (!revoke)
    return revoke.error();
  d.revoke = std::move(*revoke);
  auto remove = get_cred_list(doc, "delete");
  if (!remove)
    return remove.error();
  d.remove = std::move(*remove);
  auto upsert = get_credentials(doc, "upsert", d.version, false);
  if (!upsert)
    return upsert.error();
  d.upsert = std::move(*upsert);
  if (auto e = each_credential_once(d))
    return *e;
  if (d.version == d.base_version && (!d.revoke.empty() || !d.remove.empty() || !d.upsert.empty()))
    return input_error{"version", "must be greater than base_version when the delta changes "
                                  "anything (an empty delta with version = base_version only "
                                  "confirms the set is current)"};
  return d;
}

// -- the lock's query and the answer ---------------------------------------------

result<erase_subject_request> decode_erase_subject(std::string_view text) {
  json_reader r{text};
  if (r.error)
    return *r.error;
  const auto& doc = r.doc;
  if (auto e = only_known(doc, "", {"schema", "id", "subject"}, "expected schema, id, subject"))
    return *e;
  if (auto e = check_schema(doc, erase_schema))
    return *e;
  erase_subject_request out;
  auto id = get_text(doc, "", "id", 64, true);
  if (!id)
    return id.error();
  out.id = std::move(*id);
  auto subject = get_text(doc, "", "subject", credential_limits::max_subject_length, true);
  if (!subject)
    return subject.error();
  out.subject = std::move(*subject);
  return out;
}

result<rotate_keys_request> decode_rotate_keys(std::string_view text) {
  json_reader r{text};
  if (r.error)
    return *r.error;
  const auto& doc = r.doc;
  if (auto e = only_known(doc, "", {"schema", "id", "pseudonym_epoch", "data_key"},
                          "expected schema, id, pseudonym_epoch, data_key"))
    return *e;
  if (auto e = check_schema(doc, rotate_schema))
    return *e;
  rotate_keys_request out;
  auto id = get_text(doc, "", "id", 64, true);
  if (!id)
    return id.error();
  out.id = std::move(*id);
  for (auto [key, flag] : {std::pair{"pseudonym_epoch", &out.pseudonym_epoch},
                           std::pair{"data_key", &out.data_key}}) {
    auto it = doc.find(key);
    if (it == doc.end())
      continue;
    if (!it->is_boolean())
      return input_error{key, std::string{"expected true or false, got "} + it->type_name()};
    *flag = it->get<bool>();
  }
  if (!out.pseudonym_epoch && !out.data_key)
    return input_error{"", "nothing to rotate: set pseudonym_epoch and/or data_key to true"};
  return out;
}

result<access_request> decode_access_request(std::span<const std::uint8_t> payload) {
  if (payload.empty())
    return input_error{"", "empty payload; expected a CBOR map {cred, door, ts}"};
  if (payload.size() > credential_limits::max_access_request_bytes)
    return too_large("payload", payload.size(), credential_limits::max_access_request_bytes);
  cbor::reader in{payload};
  auto malformed = [&] {
    return input_error{"", "malformed CBOR (truncated or invalid at byte "
                             + std::to_string(in.position()) + ")"};
  };
  auto got = [](const cbor::head& h) { return ", got " + std::string{h.type_name()}; };
  auto map = in.next();
  if (!map)
    return malformed();
  if (map->type != cbor::major::map)
    return input_error{"", "expected a CBOR map" + got(*map)};
  access_request req;
  bool has_ts = false;
  for (std::uint64_t i = 0; map->indefinite || i < map->argument; ++i) {
    if (map->indefinite && in.take_break())
      break;
    auto kh = in.next();
    if (!kh)
      return malformed();
    if (kh->type != cbor::major::text_string)
      return input_error{"", "map keys must be text strings" + got(*kh)};
    auto key = in.text(*kh);
    if (!key)
      return malformed();
    auto vh = in.next();
    if (!vh)
      return malformed();
    std::string field{*key};
    if (*key == "cred" || *key == "door") {
      auto& target = *key == "cred" ? req.cred : req.door;
      if (!target.empty())
        return input_error{field, "appears twice; each field may appear once"};
      if (vh->type != cbor::major::text_string)
        return input_error{field, "expected a text string" + got(*vh)};
      auto v = in.text(*vh);
      if (!v)
        return malformed();
      auto max = *key == "cred" ? credential_limits::max_cred_length : std::size_t{64};
      if (v->empty() || v->size() > max)
        return input_error{field, "expected 1 to " + std::to_string(max) + " bytes, got "
                                    + std::to_string(v->size())};
      if (*key == "door" && !is_valid_id(*v))
        return input_error{field, "expected a door id (1-64 of A-Z a-z 0-9 _ -)"};
      // A text string is UTF-8 (RFC 8949), as in an event batch.
      if (!cbor::is_valid_utf8(*v))
        return input_error{field, "expected valid UTF-8"};
      target.assign(*v);
    } else if (*key == "ts") {
      if (has_ts)
        return input_error{field, "appears twice; each field may appear once"};
      if (vh->type != cbor::major::unsigned_integer || vh->argument == 0
          || vh->argument > INT64_MAX)
        return input_error{field, "expected Unix milliseconds" + got(*vh)};
      req.ts = static_cast<std::int64_t>(vh->argument);
      has_ts = true;
    } else {
      return input_error{field, "unknown field; expected cred, door, ts"};
    }
  }
  if (req.cred.empty())
    return input_error{"cred", "missing; expected a text string"};
  if (req.door.empty())
    return input_error{"door", "missing; expected a door id"};
  if (!has_ts)
    return input_error{"ts", "missing; expected Unix milliseconds"};
  if (!in.at_end())
    return input_error{"", "unexpected bytes after the CBOR map"};
  return req;
}

std::string_view to_string(access_reason reason) noexcept {
  switch (reason) {
  case access_reason::allowed: return "allowed";
  case access_reason::unknown_credential: return "unknown_credential";
  case access_reason::revoked: return "revoked";
  case access_reason::expired: return "expired";
  case access_reason::not_yet_valid: return "not_yet_valid";
  case access_reason::outside_schedule: return "outside_schedule";
  case access_reason::wrong_door: return "wrong_door";
  case access_reason::stale_store: return "stale_store";
  }
  return "unknown";
}

std::vector<std::uint8_t> encode_access_answer(const access_decision& d) {
  std::vector<std::uint8_t> out;
  cbor::writer w{out};
  w.map(d.until ? 3 : 2);
  w.text("allow");
  w.boolean(d.allow);
  w.text("reason");
  w.text(to_string(d.reason));
  if (d.until) {
    w.text("until");
    w.integer(*d.until);
  }
  return out;
}

// -- the decision ----------------------------------------------------------------

std::optional<std::uint16_t> parse_clock(std::string_view t) {
  if (t.size() != 5 || t[2] != ':')
    return std::nullopt;
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (!digit(t[0]) || !digit(t[1]) || !digit(t[3]) || !digit(t[4]))
    return std::nullopt;
  int h = (t[0] - '0') * 10 + (t[1] - '0');
  int m = (t[3] - '0') * 10 + (t[4] - '0');
  if (m > 59 || h > 24 || (h == 24 && m != 0))
    return std::nullopt;
  return static_cast<std::uint16_t>(h * 60 + m);
}

std::optional<std::int64_t> parse_local_datetime(std::string_view t) {
  // YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS
  if ((t.size() != 16 && t.size() != 19) || t[4] != '-' || t[7] != '-' || t[10] != 'T'
      || t[13] != ':' || (t.size() == 19 && t[16] != ':'))
    return std::nullopt;
  auto num = [&](std::size_t pos, std::size_t len) -> int {
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (t[i] < '0' || t[i] > '9')
        return -1;
      v = v * 10 + (t[i] - '0');
    }
    return v;
  };
  int y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2);
  int s = t.size() == 19 ? num(17, 2) : 0;
  if (y < 1970 || mo < 1 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 59)
    return std::nullopt;
  date::year_month_day ymd{date::year{y}, date::month{static_cast<unsigned>(mo)},
                           date::day{static_cast<unsigned>(d)}};
  if (!ymd.ok())
    return std::nullopt;
  auto days = date::sys_days{ymd}.time_since_epoch().count();
  return std::int64_t{days} * 86400 + h * 3600 + mi * 60 + s;
}

access_decision decide(const credential* c, std::string_view door, std::int64_t now_ms,
                       const date::time_zone& zone) {
  using namespace std::chrono;
  if (c == nullptr)
    return {false, access_reason::unknown_credential, std::nullopt};
  if (c->revoked)
    return {false, access_reason::revoked, std::nullopt};
  auto now_sys = sys_time<milliseconds>{milliseconds{now_ms}};
  auto info = zone.get_info(time_point_cast<seconds>(now_sys));
  // Local wall-clock time now, in ms on the local clock's own epoch.
  std::int64_t local_ms = now_ms + duration_cast<milliseconds>(info.offset).count();
  auto to_unix_ms = [&](std::int64_t local_seconds) {
    // A local time that does not exist (spring forward) or exists twice
    // (fall back) resolves to its earliest instant.
    auto lt = date::local_seconds{seconds{local_seconds}};
    return duration_cast<milliseconds>(zone.to_sys(lt, date::choose::earliest).time_since_epoch())
      .count();
  };
  auto bound_ms = [&](const time_bound& b) { return b.local ? to_unix_ms(b.value) : b.value; };
  if (c->valid_from && now_ms < bound_ms(*c->valid_from))
    return {false, access_reason::not_yet_valid, std::nullopt};
  std::optional<std::int64_t> until;
  if (c->valid_until) {
    auto end = bound_ms(*c->valid_until);
    if (now_ms >= end)
      return {false, access_reason::expired, std::nullopt};
    until = end;
  }
  bool door_ok = std::any_of(c->doors.begin(), c->doors.end(),
                             [&](const std::string& d) { return d == "*" || d == door; });
  if (!door_ok)
    return {false, access_reason::wrong_door, std::nullopt};
  if (!c->schedule.empty()) {
    auto local_day = static_cast<std::int64_t>(
      floor<days>(milliseconds{local_ms}).count()); // days since 1970-01-01 (a Thursday)
    auto minute = static_cast<std::uint16_t>((local_ms - local_day * 86400000) / 60000);
    // Monday = 0: 1970-01-01 was a Thursday (3).
    auto weekday = static_cast<unsigned>(((local_day % 7) + 7 + 3) % 7);
    const weekly_window* open = nullptr;
    for (const auto& w : c->schedule)
      if ((w.days & (1u << weekday)) != 0 && minute >= w.from_minute && minute < w.to_minute
          && (open == nullptr || w.to_minute > open->to_minute))
        open = &w;
    if (open == nullptr)
      return {false, access_reason::outside_schedule, std::nullopt};
    auto window_end = to_unix_ms(local_day * 86400 + open->to_minute * 60);
    until = until ? std::min(*until, window_end) : window_end;
  }
  return {true, access_reason::allowed, until};
}

// -- results ---------------------------------------------------------------------

std::string encode_command_result(std::string_view site, std::string_view gateway,
                                  const command_result& r) {
  json doc = {{"schema", result_schema}, {"site", site},     {"gateway", gateway},
              {"id", r.id},              {"command", r.command}, {"status", r.status},
              {"ts", r.ts}};
  if (r.version)
    doc["version"] = *r.version;
  if (r.error)
    doc["error"] = {{"field", r.error->field}, {"message", r.error->message}};
  if (!r.detail.empty())
    doc["detail"] = r.detail;
  if (r.snapshot_requested)
    doc["request"] = "snapshot";
  if (r.receipt)
    doc["receipt"] = json::parse(*r.receipt, nullptr, false);
  return dump_safe(doc);
}

} // namespace lockbridge::protocol
