#include "store/credentials.hpp"

#include <algorithm>

#include "protocols/clock_guard.hpp"
#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

constexpr std::string_view version_key = "credentials_version";
constexpr std::string_view synced_key = "credentials_synced_at";
constexpr std::string_view count_key = "credentials_count";
constexpr std::string_view time_key = "time_high_water";

MDB_val key_val(const credential_store::lookup_key& key) {
  return MDB_val{key.size(), const_cast<std::uint8_t*>(key.data())};
}

/// The subject index: HMAC(subject) -> lookup keys (sorted duplicates).
void index_put(MDB_txn* t, MDB_dbi subjects, const credential_store::lookup_key& subject,
               const credential_store::lookup_key& key) {
  MDB_val k = key_val(subject);
  MDB_val v = key_val(key);
  int rc = mdb_put(t, subjects, &k, &v, MDB_NODUPDATA);
  if (rc != MDB_KEYEXIST)
    check(rc, "write subject index");
}

void index_del(MDB_txn* t, MDB_dbi subjects, const credential_store::lookup_key& subject,
               const credential_store::lookup_key& key) {
  MDB_val k = key_val(subject);
  MDB_val v = key_val(key);
  int rc = mdb_del(t, subjects, &k, &v);
  if (rc != MDB_NOTFOUND)
    check(rc, "delete from subject index");
}

/// The stored credential under `key`, if any (damaged records count as absent
/// for the writer: it overwrites them).
std::optional<protocol::credential> open_value(const keyring& keys,
                                               const credential_store::lookup_key& key,
                                               const MDB_val& v) {
  auto plain = keys.open(table::credentials, key,
                         {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size});
  if (!plain)
    return std::nullopt;
  auto c = protocol::decode_credential(*plain);
  if (!c)
    return std::nullopt;
  return std::move(*c);
}

std::optional<protocol::credential> get(MDB_txn* t, MDB_dbi dbi, const keyring& keys,
                                        const credential_store::lookup_key& key) {
  MDB_val k = key_val(key);
  MDB_val v;
  int rc = mdb_get(t, dbi, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::nullopt;
  check(rc, "read credential");
  return open_value(keys, key, v);
}

void put(MDB_txn* t, MDB_dbi dbi, const keyring& keys, const credential_store::lookup_key& key,
         const protocol::credential& c, unsigned flags = 0) {
  auto bytes = keys.seal(table::credentials, key, protocol::encode_credential(c));
  MDB_val k = key_val(key);
  MDB_val v = as_val(std::span<const std::uint8_t>{bytes});
  check(mdb_put(t, dbi, &k, &v, flags), "write credential");
}

std::uint64_t count_of(MDB_txn* t, MDB_dbi dbi) {
  MDB_stat st;
  check(mdb_stat(t, dbi, &st), "count credentials");
  return st.ms_entries;
}

} // namespace

credential_store::credential_store(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys,
                                   const key256& lookup_key)
  : sealed_table(std::move(env), std::move(keys), table::credentials),
    lookup_(lookup_key, "lockbridge/credential-lookup/v1"),
    subject_index_(lookup_key, "lockbridge/subject-index/v1") {}

credential_store::found credential_store::find(const lookup_key& key) const {
  auto& in = env_.internals();
  txn t{in.env, false};
  MDB_val k = key_val(key);
  MDB_val v;
  int rc = mdb_get(t.get(), in.credentials, &k, &v);
  if (rc == MDB_NOTFOUND)
    return {};
  check(rc, "read credential");
  auto c = open_value(*keys_, key, v);
  if (!c)
    return {std::nullopt, true};
  return {std::move(*c), false};
}

credential_figures credential_store::figures() const {
  auto& in = env_.internals();
  txn t{in.env, false};
  credential_figures f;
  f.count = count_of(t.get(), in.credentials);
  f.version = get_u64(t.get(), in.meta, version_key, 0);
  f.synced_at = static_cast<std::int64_t>(get_u64(t.get(), in.meta, synced_key, 0));
  f.time_high_water = static_cast<std::int64_t>(get_u64(t.get(), in.meta, time_key, 0));
  return f;
}

void credential_store::replace_all(std::vector<std::pair<lookup_key, protocol::credential>> entries,
                                   std::uint64_t version, std::int64_t now_ms) {
  // Sorted by key, the set is written with MDB_APPEND (no page splits in the
  // middle); the index likewise, sorted by subject then key.
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t i = 1; i < entries.size(); ++i)
    if (entries[i].first == entries[i - 1].first)
      throw store_error{"snapshot holds the same credential twice"};
  std::vector<std::pair<lookup_key, const lookup_key*>> index;
  index.reserve(entries.size());
  for (const auto& [key, c] : entries)
    index.emplace_back(subject_key_of(c.subject), &key);
  std::sort(index.begin(), index.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : *a.second < *b.second;
  });

  auto& in = env_.internals();
  txn t{in.env, true};
  check(mdb_drop(t.get(), in.credentials, 0), "empty credentials");
  check(mdb_drop(t.get(), in.subjects, 0), "empty subject index");
  for (const auto& [key, c] : entries)
    put(t.get(), in.credentials, *keys_, key, c, MDB_APPEND);
  for (const auto& [subject, key] : index) {
    MDB_val k = key_val(subject);
    MDB_val v = key_val(*key);
    check(mdb_put(t.get(), in.subjects, &k, &v, MDB_APPENDDUP), "write subject index");
  }
  put_u64(t.get(), in.meta, version_key, version);
  put_u64(t.get(), in.meta, synced_key, static_cast<std::uint64_t>(now_ms));
  put_u64(t.get(), in.meta, count_key, entries.size());
  t.commit();
}

std::optional<credential_store::delta_counts>
credential_store::apply(const protocol::credential_delta& delta, std::int64_t now_ms) {
  auto& in = env_.internals();
  txn t{in.env, true};
  if (get_u64(t.get(), in.meta, version_key, 0) != delta.base_version)
    return std::nullopt;
  delta_counts counts;
  for (const auto& raw : delta.revoke) {
    auto key = key_of(raw);
    auto c = get(t.get(), in.credentials, *keys_, key);
    if (!c) {
      ++counts.not_found;
      continue;
    }
    c->revoked = true;
    c->version = delta.version;
    put(t.get(), in.credentials, *keys_, key, *c);
    ++counts.revoked;
  }
  for (const auto& raw : delta.remove) {
    auto key = key_of(raw);
    auto c = get(t.get(), in.credentials, *keys_, key);
    MDB_val k = key_val(key);
    int rc = mdb_del(t.get(), in.credentials, &k, nullptr);
    if (rc == MDB_NOTFOUND) {
      ++counts.not_found;
      continue;
    }
    check(rc, "delete credential");
    if (c)
      index_del(t.get(), in.subjects, subject_key_of(c->subject), key);
    ++counts.deleted;
  }
  for (const auto& u : delta.upsert) {
    auto key = key_of(u.cred);
    if (auto old = get(t.get(), in.credentials, *keys_, key);
        old && old->subject != u.value.subject)
      index_del(t.get(), in.subjects, subject_key_of(old->subject), key);
    put(t.get(), in.credentials, *keys_, key, u.value);
    index_put(t.get(), in.subjects, subject_key_of(u.value.subject), key);
    ++counts.upserted;
  }
  put_u64(t.get(), in.meta, version_key, delta.version);
  put_u64(t.get(), in.meta, synced_key, static_cast<std::uint64_t>(now_ms));
  put_u64(t.get(), in.meta, count_key, count_of(t.get(), in.credentials));
  t.commit();
  return counts;
}

bool credential_store::quarantine(const lookup_key& key) {
  auto& in = env_.internals();
  txn t{in.env, true};
  MDB_val k = key_val(key);
  MDB_val v;
  int rc = mdb_get(t.get(), in.credentials, &k, &v);
  if (rc == MDB_NOTFOUND)
    return false;
  check(rc, "read credential");
  if (open_value(*keys_, key, v))
    return false;
  quarantine_value(t.get(), in, table::credentials, key, v, "does not open",
                   protocol::unix_ms_now());
  check(mdb_del(t.get(), in.credentials, &k, nullptr), "delete credential");
  put_u64(t.get(), in.meta, count_key, count_of(t.get(), in.credentials));
  t.commit();
  return true;
}

std::vector<credential_store::lookup_key> credential_store::erase_subject(std::string_view subject) {
  auto& in = env_.internals();
  auto index_key = subject_key_of(subject);
  txn t{in.env, true};
  std::vector<lookup_key> keys;
  {
    cursor c{t.get(), in.subjects};
    MDB_val k = key_val(index_key), v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_SET_KEY);
    while (rc == MDB_SUCCESS) {
      if (v.mv_size == sizeof(lookup_key)) {
        lookup_key key;
        std::memcpy(key.data(), v.mv_data, key.size());
        keys.push_back(key);
      }
      rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT_DUP);
    }
    if (rc != MDB_NOTFOUND)
      check(rc, "read subject index");
  }
  MDB_val k = key_val(index_key);
  int rc = mdb_del(t.get(), in.subjects, &k, nullptr);
  if (rc != MDB_NOTFOUND)
    check(rc, "erase subject index");
  for (const auto& key : keys) {
    MDB_val ck = key_val(key);
    rc = mdb_del(t.get(), in.credentials, &ck, nullptr);
    if (rc != MDB_NOTFOUND)
      check(rc, "erase credential");
  }
  put_u64(t.get(), in.meta, count_key, count_of(t.get(), in.credentials));
  t.commit();
  return keys;
}

std::optional<credential_store::lookup_key>
credential_store::reseal(const std::optional<lookup_key>& from, std::size_t max) {
  std::span<const std::uint8_t> start;
  if (from)
    start = *from;
  auto next = reseal_from(start, max);
  if (next.size() != sizeof(lookup_key))
    return std::nullopt;
  lookup_key key;
  std::copy(next.begin(), next.end(), key.begin());
  return key;
}

void credential_store::save_time_high_water(std::int64_t ms) {
  auto& in = env_.internals();
  txn t{in.env, true};
  if (static_cast<std::int64_t>(get_u64(t.get(), in.meta, time_key, 0)) >= ms)
    return;
  put_u64(t.get(), in.meta, time_key, static_cast<std::uint64_t>(ms));
  t.commit();
}

} // namespace lockbridge::store
