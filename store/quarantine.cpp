#include "store/quarantine.hpp"

#include <nlohmann/json.hpp>

#include "protocols/json_input.hpp"
#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

std::string hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::int64_t moved_at(const MDB_val& v) {
  auto j = nlohmann::json::parse(std::string_view{static_cast<const char*>(v.mv_data), v.mv_size},
                                 nullptr, false);
  if (j.is_discarded() || !j.contains("at") || !j["at"].is_number_integer())
    return 0;
  return j["at"].get<std::int64_t>();
}

} // namespace

void quarantine_value(MDB_txn* t, environment::impl& in, std::string_view table,
                      std::span<const std::uint8_t> key, const MDB_val& value,
                      std::string_view reason, std::int64_t now_ms) {
  nlohmann::json j{{"table", table},
                   {"key", hex(key)},
                   {"at", now_ms},
                   {"reason", reason},
                   {"value", hex({static_cast<const std::uint8_t*>(value.mv_data), value.mv_size})}};
  auto text = protocol::dump_safe(j);
  auto seq = get_u64(t, in.meta, "quarantine.next", 1);
  std::uint8_t k[8];
  put_be64(k, seq);
  MDB_val kv{8, k};
  MDB_val vv = as_val(std::string_view{text});
  check(mdb_put(t, in.quarantine, &kv, &vv, 0), "write quarantine");
  put_u64(t, in.meta, "quarantine.next", seq + 1);
}

quarantine_figures quarantine_stats(environment& env) {
  auto& in = env.internals();
  txn t{in.env, false};
  MDB_stat st;
  check(mdb_stat(t.get(), in.quarantine, &st), "count quarantine");
  quarantine_figures f;
  f.count = st.ms_entries;
  cursor c{t.get(), in.quarantine};
  MDB_val k, v;
  if (mdb_cursor_get(c.get(), &k, &v, MDB_FIRST) == MDB_SUCCESS)
    f.oldest_at = moved_at(v);
  return f;
}

std::uint64_t purge_quarantine_before(environment& env, std::int64_t cutoff_ms) {
  auto& in = env.internals();
  txn t{in.env, true};
  cursor c{t.get(), in.quarantine};
  MDB_val k, v;
  std::uint64_t removed = 0;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS && moved_at(v) < cutoff_ms) {
    check(mdb_cursor_del(c.get(), 0), "purge quarantine");
    ++removed;
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  if (removed > 0) {
    c.close();
    t.commit();
  }
  return removed;
}

} // namespace lockbridge::store
