#include "store/audit.hpp"

#include <openssl/evp.h>

#include "protocols/json_input.hpp"
#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

constexpr std::string_view next_key = "audit.next";
constexpr std::string_view head_key = "audit.head";       // hash of the last record appended
constexpr std::string_view base_seq_key = "audit.base_seq"; // first seq not yet removed
constexpr std::string_view base_hash_key = "audit.base";   // hash of the last record removed

const std::string zero_hash(64, '0');

std::string get_text(MDB_txn* t, MDB_dbi dbi, std::string_view key, const std::string& fallback) {
  MDB_val k = as_val(key), v;
  int rc = mdb_get(t, dbi, &k, &v);
  if (rc == MDB_NOTFOUND)
    return fallback;
  check(rc, "read audit anchor");
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

void put_text(MDB_txn* t, MDB_dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = as_val(key), v = as_val(value);
  check(mdb_put(t, dbi, &k, &v, 0), "write audit anchor");
}

std::optional<std::string> open_record(const keyring& keys, const MDB_val& k, const MDB_val& v) {
  auto plain = keys.open(table::audit, {static_cast<const std::uint8_t*>(k.mv_data), k.mv_size},
                         {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size});
  if (!plain)
    return std::nullopt;
  return std::string{plain->begin(), plain->end()};
}

std::int64_t at_of(const std::string& json) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.contains("at") || !j["at"].is_number_integer())
    return 0;
  return j["at"].get<std::int64_t>();
}

} // namespace

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[32];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr) != 1)
    throw store_error{"OpenSSL SHA-256 failed"};
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += digits[digest[i] >> 4];
    out += digits[digest[i] & 15];
  }
  return out;
}

audit_log::audit_log(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys)
  : sealed_log(std::move(env), std::move(keys), table::audit) {}

std::uint64_t audit_log::append(std::int64_t now_ms, std::string_view action,
                                nlohmann::json detail) {
  std::lock_guard guard{writer_};
  auto& in = env_.internals();
  txn t{in.env, true};
  auto seq = get_u64(t.get(), in.meta, next_key, 1);
  auto prev = get_text(t.get(), in.meta, head_key, zero_hash);
  // nlohmann's object is a sorted map: dump() is the canonical form. Details
  // may carry outside text: invalid UTF-8 is replaced, never thrown on.
  nlohmann::json record{{"seq", seq},
                        {"at", now_ms},
                        {"action", action},
                        {"detail", detail.is_null() ? nlohmann::json::object() : std::move(detail)},
                        {"prev", prev}};
  auto text = protocol::dump_safe(record);
  std::uint8_t key[8];
  put_be64(key, seq);
  auto sealed = keys_->seal(table::audit, key,
                            {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
  MDB_val k{8, key};
  MDB_val v = as_val(std::span<const std::uint8_t>{sealed});
  check(mdb_put(t.get(), in.audit, &k, &v, MDB_APPEND), "append audit record");
  put_u64(t.get(), in.meta, next_key, seq + 1);
  put_text(t.get(), in.meta, head_key, sha256_hex(text));
  t.commit();
  return seq;
}

std::vector<audit_entry> audit_log::read(std::uint64_t from, std::size_t max,
                                         std::vector<std::uint64_t>* damaged) const {
  std::vector<audit_entry> out;
  walk(from, max, damaged, [&](std::uint64_t seq, std::span<const std::uint8_t> plain) {
    std::string json{plain.begin(), plain.end()};
    auto hash = sha256_hex(json);
    out.push_back({seq, std::move(json), std::move(hash)});
    return true;
  });
  return out;
}

std::uint64_t audit_log::remove_front(const front_predicate& keep_going) {
  std::lock_guard guard{writer_};
  auto& in = env_.internals();
  txn t{in.env, true};
  cursor c{t.get(), in.audit};
  MDB_val k, v;
  std::uint64_t removed = 0, last_seq = 0;
  std::string last_hash;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    auto seq = get_be64(k.mv_data);
    auto json = open_record(*keys_, k, v);
    if (!keep_going(seq, json))
      break;
    // A record that does not open leaves no hash: the anchor then cannot be
    // checked against it, which verify reports.
    last_hash = json ? sha256_hex(*json) : std::string(64, 'x');
    last_seq = seq;
    check(mdb_cursor_del(c.get(), 0), "remove audit record");
    ++removed;
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  if (removed == 0)
    return 0;
  put_u64(t.get(), in.meta, base_seq_key, last_seq + 1);
  put_text(t.get(), in.meta, base_hash_key, last_hash);
  c.close();
  t.commit();
  return removed;
}

void audit_log::remove_upto(std::uint64_t seq) {
  remove_front([seq](std::uint64_t s, const std::optional<std::string>&) { return s <= seq; });
}

std::uint64_t audit_log::purge_before(std::int64_t cutoff_ms) {
  return remove_front([cutoff_ms](std::uint64_t, const std::optional<std::string>& json) {
    return !json || at_of(*json) < cutoff_ms;
  });
}

audit_verdict audit_log::verify() const {
  auto& in = env_.internals();
  txn t{in.env, false};
  audit_verdict out;
  auto expected_seq = get_u64(t.get(), in.meta, base_seq_key, 1);
  auto expected_prev = get_text(t.get(), in.meta, base_hash_key, zero_hash);
  auto head = get_text(t.get(), in.meta, head_key, zero_hash);
  auto next = get_u64(t.get(), in.meta, next_key, 1);
  out.first_seq = expected_seq;
  auto fail = [&](std::uint64_t seq, std::string reason) {
    out.ok = false;
    out.broken_at = seq;
    out.reason = std::move(reason);
    return out;
  };
  cursor c{t.get(), in.audit};
  MDB_val k, v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    auto seq = get_be64(k.mv_data);
    if (seq != expected_seq)
      return fail(expected_seq, "record " + std::to_string(expected_seq) + " is missing (next "
                                  "held is " + std::to_string(seq) + ")");
    auto json = open_record(*keys_, k, v);
    if (!json)
      return fail(seq, "record does not open (altered, moved or its data key is gone)");
    auto j = nlohmann::json::parse(*json, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("prev") || !j.contains("seq"))
      return fail(seq, "record is not a well-formed audit record");
    if (j["seq"] != seq)
      return fail(seq, "record carries seq " + j["seq"].dump() + " under key "
                         + std::to_string(seq));
    if (j["prev"] != expected_prev)
      return fail(seq, "prev hash " + j["prev"].get<std::string>() + " does not match the "
                         "previous record's hash " + expected_prev);
    expected_prev = sha256_hex(*json);
    ++expected_seq;
    ++out.records;
  }
  if (rc != MDB_NOTFOUND)
    check(rc, "walk audit");
  if (expected_seq != next)
    return fail(expected_seq, "records " + std::to_string(expected_seq) + " to "
                                + std::to_string(next - 1) + " are missing at the end");
  if (expected_prev != head)
    return fail(next - 1, "the last record's hash does not match the head saved with it");
  return out;
}

audit_figures audit_log::figures() const {
  auto& in = env_.internals();
  txn t{in.env, false};
  audit_figures f;
  MDB_stat st;
  check(mdb_stat(t.get(), in.audit, &st), "count audit");
  f.count = st.ms_entries;
  f.next_seq = get_u64(t.get(), in.meta, next_key, 1);
  cursor c{t.get(), in.audit};
  MDB_val k, v;
  if (mdb_cursor_get(c.get(), &k, &v, MDB_FIRST) == MDB_SUCCESS)
    if (auto json = open_record(*keys_, k, v))
      f.oldest_at = at_of(*json);
  return f;
}

} // namespace lockbridge::store
