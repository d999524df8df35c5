#include "store/outbox.hpp"

#include <cstring>

#include "protocols/clock_guard.hpp"
#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

constexpr std::string_view next_key = "outbox.next";

} // namespace

outbox::outbox(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys)
  : sealed_log(std::move(env), std::move(keys), table::outbox) {}

std::uint64_t outbox::append_in(void* txn_handle, std::string_view payload) {
  auto& in = env_.internals();
  auto* t = static_cast<MDB_txn*>(txn_handle);
  auto number = get_u64(t, in.meta, next_key, 1);
  std::uint8_t key[8];
  put_be64(key, number);
  auto sealed = keys_->seal(table::outbox, key,
                            {reinterpret_cast<const std::uint8_t*>(payload.data()),
                             payload.size()});
  MDB_val k{sizeof key, key}, v{sealed.size(), sealed.data()};
  check(mdb_put(t, in.outbox, &k, &v, 0), "append to the outbox");
  put_u64(t, in.meta, next_key, number + 1);
  return number;
}

std::uint64_t outbox::append(std::string_view payload) {
  txn t{env_.internals().env, true};
  auto number = append_in(t.get(), payload);
  t.commit();
  return number;
}

std::uint64_t outbox::append_answer(std::string_view payload, std::string_view command_id) {
  auto& in = env_.internals();
  txn t{in.env, true};
  auto number = append_in(t.get(), payload);
  // The command keeps only its expiry (against replays): answered.
  MDB_val k = as_val(command_id), v;
  int rc = mdb_get(t.get(), in.commands, &k, &v);
  if (rc == MDB_SUCCESS && v.mv_size > 8) {
    std::uint8_t expiry[8];
    std::memcpy(expiry, v.mv_data, 8);
    MDB_val nv{8, expiry};
    check(mdb_put(t.get(), in.commands, &k, &nv, 0), "mark the command answered");
  } else if (rc != MDB_NOTFOUND && rc != MDB_SUCCESS) {
    check(rc, "read the command");
  }
  t.commit();
  return number;
}

void outbox::remove(std::uint64_t number) {
  auto& in = env_.internals();
  txn t{in.env, true};
  std::uint8_t key[8];
  put_be64(key, number);
  MDB_val k{sizeof key, key};
  int rc = mdb_del(t.get(), in.outbox, &k, nullptr);
  if (rc == MDB_NOTFOUND)
    return;
  check(rc, "remove from the outbox");
  t.commit();
}

std::vector<outbox::entry> outbox::read(std::uint64_t from, std::size_t max,
                                        std::vector<std::uint64_t>* unreadable) const {
  std::vector<entry> out;
  walk(from, max, unreadable, [&](std::uint64_t number, std::span<const std::uint8_t> plain) {
    out.push_back({number, std::string{plain.begin(), plain.end()}});
    return true;
  });
  return out;
}

std::uint64_t outbox::size() const {
  auto& in = env_.internals();
  txn t{in.env, false};
  MDB_stat s{};
  check(mdb_stat(t.get(), in.outbox, &s), "count the outbox");
  return s.ms_entries;
}

} // namespace lockbridge::store
