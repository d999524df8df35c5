#include "store/commands.hpp"

#include <algorithm>

#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

bool command_ids::remember(std::string_view id, std::int64_t expires_at) {
  auto& in = env_.internals();
  txn t{in.env, true};
  std::uint8_t value[8];
  put_be64(value, static_cast<std::uint64_t>(expires_at));
  MDB_val k = as_val(id), v{8, value};
  int rc = mdb_put(t.get(), in.commands, &k, &v, MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST)
    return false;
  check(rc, "record command id");
  t.commit();
  return true;
}

bool command_ids::remember(std::string_view id, std::int64_t expires_at, std::string_view lock,
                           std::span<const std::uint8_t> request) {
  // expiry (8, BE) | lock length (1) | lock | the request as the lock gets it
  std::vector<std::uint8_t> value(8);
  put_be64(value.data(), static_cast<std::uint64_t>(expires_at));
  value.push_back(static_cast<std::uint8_t>(std::min<std::size_t>(lock.size(), 255)));
  value.insert(value.end(), lock.begin(), lock.begin() + value.back());
  value.insert(value.end(), request.begin(), request.end());
  auto& in = env_.internals();
  txn t{in.env, true};
  MDB_val k = as_val(id), v{value.size(), value.data()};
  int rc = mdb_put(t.get(), in.commands, &k, &v, MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST)
    return false;
  check(rc, "record command");
  t.commit();
  return true;
}

std::vector<command_ids::unanswered_command> command_ids::unanswered() const {
  auto& in = env_.internals();
  txn t{in.env, false};
  cursor c{t.get(), in.commands};
  MDB_val k, v;
  std::vector<unanswered_command> out;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    auto* b = static_cast<const std::uint8_t*>(v.mv_data);
    if (v.mv_size <= 9 || 9 + std::size_t{b[8]} > v.mv_size)
      continue; // answered (expiry only)
    unanswered_command u;
    u.id.assign(static_cast<const char*>(k.mv_data), k.mv_size);
    u.expires_at = static_cast<std::int64_t>(get_be64(b));
    u.lock.assign(reinterpret_cast<const char*>(b + 9), b[8]);
    u.request.assign(b + 9 + b[8], b + v.mv_size);
    out.push_back(std::move(u));
  }
  if (rc != MDB_NOTFOUND)
    check(rc, "walk commands");
  return out;
}

std::uint64_t command_ids::forget_expired(std::int64_t now_ms) {
  auto& in = env_.internals();
  txn t{in.env, true};
  cursor c{t.get(), in.commands};
  MDB_val k, v;
  std::uint64_t removed = 0;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    bool answered = v.mv_size == 8;
    if (v.mv_size < 8 || (answered && static_cast<std::int64_t>(get_be64(v.mv_data)) < now_ms)) {
      check(mdb_cursor_del(c.get(), 0), "forget command id");
      ++removed;
    }
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND)
    check(rc, "walk command ids");
  c.close();
  if (removed > 0)
    t.commit();
  return removed;
}

} // namespace lockbridge::store
