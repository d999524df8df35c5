#include "store/sealed_table.hpp"

#include "protocols/clock_guard.hpp"
#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

/// The LMDB table a sealed table's name stands for.
MDB_dbi dbi_of(const environment::impl& in, std::string_view table_name) {
  if (table_name == table::journal)
    return in.journal;
  if (table_name == table::audit)
    return in.audit;
  if (table_name == table::outbox)
    return in.outbox;
  if (table_name == table::credentials)
    return in.credentials;
  throw store_error("no sealed table named " + std::string{table_name});
}

std::span<const std::uint8_t> bytes_of(const MDB_val& v) {
  return {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size};
}

} // namespace

sealed_table::sealed_table(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys,
                           std::string_view table)
  : owner_(std::move(env)), env_(held(owner_)), keys_(std::move(keys)), table_(table) {
  dbi_of(env_.internals(), table_); // a name that is no table fails here, not later
}

bool sealed_table::decodes(std::span<const std::uint8_t>) const {
  return true;
}

std::vector<std::uint8_t> sealed_table::reseal_from(std::span<const std::uint8_t> from,
                                                    std::size_t max) {
  std::lock_guard writer{writer_};
  auto& in = env_.internals();
  txn t{in.env, true};
  auto next = reseal_values(t.get(), dbi_of(in, table_), *keys_, table_, from, max);
  t.commit();
  return next;
}

std::uint64_t sealed_log::reseal(std::uint64_t from, std::size_t max) {
  std::uint8_t key[8];
  put_be64(key, from);
  auto next = reseal_from(key, max);
  return next.size() == 8 ? get_be64(next.data()) : 0;
}

void sealed_log::walk(std::uint64_t from, std::size_t max, std::vector<std::uint64_t>* damaged,
                      const visitor& take) const {
  if (max == 0)
    return;
  auto& in = env_.internals();
  txn t{in.env, false};
  cursor c{t.get(), dbi_of(in, table_name())};
  std::uint8_t key_buf[8];
  put_be64(key_buf, from);
  MDB_val k{8, key_buf}, v;
  std::size_t taken = 0;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS && taken < max) {
    if (k.mv_size == 8) {
      auto key = get_be64(k.mv_data);
      auto plain = keys_->open(table_name(), bytes_of(k), bytes_of(v));
      if (plain && take(key, *plain)) {
        ++taken;
      } else if (damaged != nullptr) {
        damaged->push_back(key);
      }
    }
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    check(rc, "read a sealed table");
}

sealed_log::moved_entries sealed_log::quarantine_in(void* txn_handle,
                                                    std::span<const std::uint64_t> keys) {
  auto* t = static_cast<MDB_txn*>(txn_handle);
  auto& in = env_.internals();
  auto dbi = dbi_of(in, table_name());
  moved_entries moved;
  auto now = protocol::unix_ms_now();
  for (auto key : keys) {
    std::uint8_t key_buf[8];
    put_be64(key_buf, key);
    MDB_val k{8, key_buf}, v;
    int rc = mdb_get(t, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
      continue;
    check(rc, "read an entry to quarantine");
    if (auto plain = keys_->open(table_name(), key_buf, bytes_of(v)); plain && decodes(*plain))
      continue; // it opens now (a data key came back): not damaged
    quarantine_value(t, in, table_name(), key_buf, v, "does not open", now);
    moved.value_bytes += v.mv_size;
    check(mdb_del(t, dbi, &k, nullptr), "delete a quarantined entry");
    ++moved.count;
  }
  return moved;
}

std::uint64_t sealed_log::quarantine(std::span<const std::uint64_t> keys) {
  std::lock_guard writer{writer_};
  txn t{env_.internals().env, true};
  auto moved = quarantine_in(t.get(), keys);
  if (moved.count > 0)
    t.commit();
  return moved.count;
}

} // namespace lockbridge::store
