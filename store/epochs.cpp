#include "store/epochs.hpp"

#include <openssl/crypto.h>

#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

std::array<std::uint8_t, 4> epoch_name(std::uint32_t epoch) {
  return {static_cast<std::uint8_t>(epoch >> 24), static_cast<std::uint8_t>(epoch >> 16),
          static_cast<std::uint8_t>(epoch >> 8), static_cast<std::uint8_t>(epoch)};
}

void put_epoch(MDB_txn* t, MDB_dbi dbi, const keyring& keys, const epoch_key& e) {
  std::array<std::uint8_t, 40> plain;
  std::copy(e.key.begin(), e.key.end(), plain.begin());
  put_be64(plain.data() + 32, static_cast<std::uint64_t>(e.created_at));
  auto name = epoch_name(e.epoch);
  auto sealed = keys.seal(table::epochs, name, plain);
  OPENSSL_cleanse(plain.data(), plain.size());
  MDB_val k{name.size(), name.data()};
  MDB_val v = as_val(std::span<const std::uint8_t>{sealed});
  check(mdb_put(t, dbi, &k, &v, 0), "write epoch key");
}

} // namespace

epoch_store::epoch_store(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys, std::int64_t now_ms)
  : owner_(std::move(env)), env_(held(owner_)), keys_(std::move(keys)) {
  load();
  if (epochs_.empty())
    rotate(now_ms);
}

void epoch_store::load() {
  auto& in = env_.internals();
  txn t{in.env, false};
  cursor c{t.get(), in.epochs};
  MDB_val k, v;
  std::vector<epoch_key> loaded;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    if (k.mv_size != 4)
      continue;
    std::span<const std::uint8_t> name{static_cast<const std::uint8_t*>(k.mv_data), 4};
    auto plain = keys_->open(table::epochs, name,
                             {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size});
    std::uint32_t epoch = (std::uint32_t{name[0]} << 24) | (std::uint32_t{name[1]} << 16)
                          | (std::uint32_t{name[2]} << 8) | name[3];
    if (!plain || plain->size() != 40) {
      // A key that does not open cannot pseudonymise; if it was the one in
      // force, a new epoch replaces it (the constructor rotates).
      continue;
    }
    epoch_key e;
    e.epoch = epoch;
    std::copy(plain->begin(), plain->begin() + 32, e.key.begin());
    e.created_at = static_cast<std::int64_t>(get_be64(plain->data() + 32));
    OPENSSL_cleanse(plain->data(), plain->size());
    loaded.push_back(e);
  }
  if (rc != MDB_NOTFOUND)
    check(rc, "read epoch keys");
  std::lock_guard guard{mutex_};
  epochs_ = std::move(loaded);
}

epoch_key epoch_store::current() const {
  std::lock_guard guard{mutex_};
  return epochs_.back();
}

std::vector<epoch_key> epoch_store::all() const {
  std::lock_guard guard{mutex_};
  return epochs_;
}

epoch_key epoch_store::rotate(std::int64_t now_ms) {
  auto& in = env_.internals();
  std::lock_guard guard{mutex_};
  epoch_key e;
  {
    txn t{in.env, false};
    // Epoch numbers never repeat, even after every key was destroyed.
    e.epoch = static_cast<std::uint32_t>(get_u64(t.get(), in.meta, "epoch.next", 1));
  }
  if (!epochs_.empty())
    e.epoch = std::max(e.epoch, epochs_.back().epoch + 1);
  e.key = random_key();
  e.created_at = now_ms;
  txn t{in.env, true};
  put_epoch(t.get(), in.epochs, *keys_, e);
  put_u64(t.get(), in.meta, "epoch.next", e.epoch + 1);
  t.commit();
  epochs_.push_back(e);
  return e;
}

std::vector<std::uint32_t> epoch_store::destroy_ended_before(std::int64_t cutoff_ms) {
  auto& in = env_.internals();
  std::lock_guard guard{mutex_};
  std::vector<std::uint32_t> destroyed;
  std::size_t n = 0;
  while (n + 1 < epochs_.size() && epochs_[n + 1].created_at < cutoff_ms)
    ++n;
  if (n == 0)
    return destroyed;
  txn t{in.env, true};
  for (std::size_t i = 0; i < n; ++i) {
    auto name = epoch_name(epochs_[i].epoch);
    MDB_val k{name.size(), name.data()};
    int rc = mdb_del(t.get(), in.epochs, &k, nullptr);
    if (rc != MDB_NOTFOUND)
      check(rc, "destroy epoch key");
    destroyed.push_back(epochs_[i].epoch);
  }
  t.commit();
  for (std::size_t i = 0; i < n; ++i)
    OPENSSL_cleanse(epochs_[i].key.data(), epochs_[i].key.size());
  epochs_.erase(epochs_.begin(), epochs_.begin() + static_cast<std::ptrdiff_t>(n));
  return destroyed;
}

void epoch_store::reseal() {
  auto& in = env_.internals();
  std::lock_guard guard{mutex_};
  txn t{in.env, true};
  for (const auto& e : epochs_)
    put_epoch(t.get(), in.epochs, *keys_, e);
  t.commit();
}

} // namespace lockbridge::store
