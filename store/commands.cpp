#include "store/commands.hpp"

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

std::uint64_t command_ids::forget_expired(std::int64_t now_ms) {
  auto& in = env_.internals();
  txn t{in.env, true};
  cursor c{t.get(), in.commands};
  MDB_val k, v;
  std::uint64_t removed = 0;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    if (v.mv_size != 8 || static_cast<std::int64_t>(get_be64(v.mv_data)) < now_ms) {
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
