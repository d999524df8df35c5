#include "store/sealing.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

constexpr std::uint8_t format = 0x01;
constexpr std::size_t nonce_size = 12;
constexpr std::size_t tag_size = 16;
constexpr std::size_t header_size = 1 + 4 + nonce_size;
constexpr std::string_view current_key = "dek.current";

std::atomic<std::uint64_t> next_instance{1};

using ctx_ptr = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

ctx_ptr new_ctx() {
  ctx_ptr ctx{EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free};
  if (!ctx)
    throw store_error{"OpenSSL could not allocate a cipher context"};
  return ctx;
}

const EVP_CIPHER* wrap_cipher(std::size_t kek_size) {
  switch (kek_size) {
  case 16: return EVP_aes_128_wrap_pad();
  case 24: return EVP_aes_192_wrap_pad();
  case 32: return EVP_aes_256_wrap_pad();
  default: throw store_error{"a key-encryption key has 16, 24 or 32 bytes"};
  }
}

/// "dek" + id (u32 BE): the wrapped data keys sort by id.
std::array<std::uint8_t, 7> dek_name(std::uint32_t id) {
  return {'d', 'e', 'k', static_cast<std::uint8_t>(id >> 24), static_cast<std::uint8_t>(id >> 16),
          static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id)};
}

void put_be32(std::uint8_t* out, std::uint32_t v) {
  out[0] = static_cast<std::uint8_t>(v >> 24);
  out[1] = static_cast<std::uint8_t>(v >> 16);
  out[2] = static_cast<std::uint8_t>(v >> 8);
  out[3] = static_cast<std::uint8_t>(v);
}

std::uint32_t get_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8)
         | p[3];
}

/// Associated data: domain, table, schema version, the value's header (format
/// and key id) and its LMDB key.
std::vector<std::uint8_t> associated_data(std::string_view table, std::span<const std::uint8_t> key,
                                          const std::uint8_t* header) {
  static constexpr std::string_view domain = "lockbridge/sealed-value/v1";
  std::vector<std::uint8_t> ad(domain.size() + 1 + table.size() + 1 + 4 + 5 + key.size());
  auto* p = ad.data();
  auto append = [&p](const void* data, std::size_t size) {
    if (size > 0)
      std::memcpy(p, data, size);
    p += size;
  };
  const std::uint8_t zero = 0;
  append(domain.data(), domain.size());
  append(&zero, 1);
  append(table.data(), table.size());
  append(&zero, 1);
  std::uint8_t v[4];
  put_be32(v, schema_version);
  append(v, 4);
  append(header, 5);
  append(key.data(), key.size());
  return ad;
}

void store_wrapped(MDB_txn* t, MDB_dbi dbi, std::uint32_t id, const key256& kek, const key256& dek) {
  auto wrapped = wrap_key(kek, dek);
  auto name = dek_name(id);
  MDB_val k{name.size(), name.data()};
  MDB_val v = as_val(std::span<const std::uint8_t>{wrapped});
  check(mdb_put(t, dbi, &k, &v, 0), "write wrapped data key");
}

/// Unwraps every data key in the store with `kek`: nothing if any fails.
std::optional<std::map<std::uint32_t, key256>> unwrap_all(MDB_txn* t, MDB_dbi dbi,
                                                           const key256& kek) {
  std::map<std::uint32_t, key256> keys;
  cursor c{t, dbi};
  MDB_val k, v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    auto name = static_cast<const std::uint8_t*>(k.mv_data);
    if (k.mv_size != 7 || name[0] != 'd' || name[1] != 'e' || name[2] != 'k')
      continue;
    auto dek = unwrap_key(kek, {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size});
    if (!dek || dek->size() != 32)
      return std::nullopt;
    key256 key;
    std::copy(dek->begin(), dek->end(), key.begin());
    OPENSSL_cleanse(dek->data(), dek->size());
    keys.emplace(get_be32(name + 3), key);
  }
  if (rc != MDB_NOTFOUND)
    check(rc, "read wrapped data keys");
  return keys;
}

} // namespace

key256 random_key() {
  key256 key;
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1)
    throw store_error{"OpenSSL's random generator failed"};
  return key;
}

std::vector<std::uint8_t> wrap_key(std::span<const std::uint8_t> kek,
                                   std::span<const std::uint8_t> key) {
  auto ctx = new_ctx();
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  std::vector<std::uint8_t> out(key.size() + 16);
  int len = 0, fin = 0;
  if (EVP_EncryptInit_ex(ctx.get(), wrap_cipher(kek.size()), nullptr, kek.data(), nullptr) != 1
      || EVP_EncryptUpdate(ctx.get(), out.data(), &len, key.data(), static_cast<int>(key.size()))
           != 1
      || EVP_EncryptFinal_ex(ctx.get(), out.data() + len, &fin) != 1)
    throw store_error{"OpenSSL AES key wrap failed"};
  out.resize(static_cast<std::size_t>(len + fin));
  return out;
}

std::optional<std::vector<std::uint8_t>> unwrap_key(std::span<const std::uint8_t> kek,
                                                    std::span<const std::uint8_t> wrapped) {
  if (wrapped.size() < 16 || wrapped.size() % 8 != 0)
    return std::nullopt;
  auto ctx = new_ctx();
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  std::vector<std::uint8_t> out(wrapped.size());
  int len = 0, fin = 0;
  if (EVP_DecryptInit_ex(ctx.get(), wrap_cipher(kek.size()), nullptr, kek.data(), nullptr) != 1
      || EVP_DecryptUpdate(ctx.get(), out.data(), &len, wrapped.data(),
                           static_cast<int>(wrapped.size()))
           != 1
      || EVP_DecryptFinal_ex(ctx.get(), out.data() + len, &fin) != 1) {
    OPENSSL_cleanse(out.data(), out.size());
    return std::nullopt;
  }
  out.resize(static_cast<std::size_t>(len + fin));
  return out;
}

keyring::keyring(std::shared_ptr<environment> env, const key256& kek, std::optional<key256> previous_kek)
  : owner_(std::move(env)), env_(held(owner_)), instance_(next_instance++), kek_(kek) {
  auto& in = env_.internals();
  txn t{in.env, true};
  auto keys = unwrap_all(t.get(), in.keys, kek);
  bool rewrapped = false;
  if (!keys && previous_kek) {
    keys = unwrap_all(t.get(), in.keys, *previous_kek);
    rewrapped = keys.has_value();
  }
  if (!keys)
    throw store_error{
      "the key-encryption key does not open the data keys in " + env_.dir().string()
      + ": it is not the key this state was sealed with. If you rotated it, give the old one "
        "as security.previous_key_encryption_key_file for one start; otherwise restore the "
        "right key file (docs/security.md)",
      store_error::kind::foreign};
  current_ = static_cast<std::uint32_t>(get_u64(t.get(), in.keys, current_key, 0));
  bool created = keys->empty();
  if (created) {
    current_ = 1;
    keys->emplace(current_, random_key());
    put_u64(t.get(), in.keys, current_key, current_);
  } else if (!keys->contains(current_)) {
    throw store_error{"the data key in force (" + std::to_string(current_) + ") is missing from "
                      + env_.dir().string() + "; the state is damaged: restore a backup",
                      store_error::kind::damaged};
  }
  keys_ = std::move(*keys);
  if (rewrapped || created) {
    for (const auto& [id, dek] : keys_)
      store_wrapped(t.get(), in.keys, id, kek_, dek);
    t.commit();
  }
}

namespace {

/// A thread's cipher context with a data key's schedule already set up:
/// setting up a key costs several times more than sealing a small value, so
/// each thread keeps one context per direction for the key it used last.
struct keyed_context {
  std::uint64_t instance = 0; ///< which keyring (0: none)
  std::uint32_t id = 0;       ///< which of its data keys
  ctx_ptr ctx = new_ctx();
};

/// 12 fresh bytes from OpenSSL's CSPRNG. Drawn 4 KiB at a time per thread:
/// each call into the DRBG costs about as much as sealing a small value.
void random_nonce(std::uint8_t* out) {
  thread_local std::array<std::uint8_t, 4096 - 4096 % nonce_size> pool;
  thread_local std::size_t used = pool.size();
  if (used == pool.size()) {
    if (RAND_bytes(pool.data(), static_cast<int>(pool.size())) != 1)
      throw store_error{"OpenSSL's random generator failed"};
    used = 0;
  }
  std::memcpy(out, pool.data() + used, nonce_size);
  OPENSSL_cleanse(pool.data() + used, nonce_size);
  used += nonce_size;
}

EVP_CIPHER_CTX* context_for(std::uint64_t instance, std::uint32_t id, bool encrypt,
                            const key256& dek) {
  thread_local keyed_context enc, dec;
  auto& c = encrypt ? enc : dec;
  if (c.instance != instance || c.id != id) {
    c.instance = 0;
    int ok = encrypt ? EVP_EncryptInit_ex(c.ctx.get(), EVP_aes_256_gcm(), nullptr, dek.data(),
                                          nullptr)
                     : EVP_DecryptInit_ex(c.ctx.get(), EVP_aes_256_gcm(), nullptr, dek.data(),
                                          nullptr);
    if (ok != 1)
      throw store_error{"OpenSSL AES-256-GCM setup failed"};
    c.instance = instance;
    c.id = id;
  }
  return c.ctx.get();
}

} // namespace

std::vector<std::uint8_t> keyring::seal(std::string_view table, std::span<const std::uint8_t> key,
                                        std::span<const std::uint8_t> plain) const {
  std::vector<std::uint8_t> out(header_size + plain.size() + tag_size);
  EVP_CIPHER_CTX* ctx = nullptr;
  {
    std::shared_lock lock{mutex_};
    put_be32(out.data() + 1, current_);
    ctx = context_for(instance_, current_, true, keys_.at(current_));
  }
  out[0] = format;
  random_nonce(out.data() + 5);
  auto ad = associated_data(table, key, out.data());
  int len = 0, fin = 0;
  auto* body = out.data() + header_size;
  bool ok = EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, out.data() + 5) == 1
            && EVP_EncryptUpdate(ctx, nullptr, &len, ad.data(), static_cast<int>(ad.size())) == 1
            && EVP_EncryptUpdate(ctx, body, &len, plain.data(), static_cast<int>(plain.size()))
                 == 1
            && EVP_EncryptFinal_ex(ctx, body + len, &fin) == 1
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, tag_size, body + plain.size()) == 1;
  if (!ok)
    throw store_error{"OpenSSL AES-256-GCM sealing failed"};
  return out;
}

std::optional<std::vector<std::uint8_t>> keyring::open(std::string_view table,
                                                       std::span<const std::uint8_t> key,
                                                       std::span<const std::uint8_t> sealed) const {
  if (sealed.size() < overhead || sealed[0] != format)
    return std::nullopt;
  auto id = get_be32(sealed.data() + 1);
  EVP_CIPHER_CTX* ctx = nullptr;
  {
    std::shared_lock lock{mutex_};
    auto it = keys_.find(id);
    if (it == keys_.end())
      return std::nullopt;
    ctx = context_for(instance_, id, false, it->second);
  }
  auto ad = associated_data(table, key, sealed.data());
  std::size_t size = sealed.size() - overhead;
  std::vector<std::uint8_t> out(size);
  int len = 0, fin = 0;
  auto tag = const_cast<std::uint8_t*>(sealed.data() + header_size + size);
  bool ok = EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, sealed.data() + 5) == 1
            && EVP_DecryptUpdate(ctx, nullptr, &len, ad.data(), static_cast<int>(ad.size())) == 1
            && EVP_DecryptUpdate(ctx, out.data(), &len, sealed.data() + header_size,
                                 static_cast<int>(size))
                 == 1
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, tag_size, tag) == 1
            && EVP_DecryptFinal_ex(ctx, out.data() + len, &fin) == 1;
  if (!ok) {
    OPENSSL_cleanse(out.data(), out.size());
    return std::nullopt;
  }
  return out;
}

std::uint32_t keyring::key_id_of(std::span<const std::uint8_t> sealed) {
  if (sealed.size() < overhead || sealed[0] != format)
    return 0;
  return get_be32(sealed.data() + 1);
}

std::uint32_t keyring::current() const {
  std::shared_lock lock{mutex_};
  return current_;
}

std::vector<std::uint32_t> keyring::ids() const {
  std::shared_lock lock{mutex_};
  std::vector<std::uint32_t> out;
  for (const auto& [id, key] : keys_)
    out.push_back(id);
  return out;
}

bool keyring::is_kek(const key256& kek) const {
  std::shared_lock lock{mutex_};
  return CRYPTO_memcmp(kek.data(), kek_.data(), kek.size()) == 0;
}

std::vector<std::uint8_t> reseal_values(MDB_txn* t, MDB_dbi dbi, const keyring& keys,
                                        std::string_view table,
                                        std::span<const std::uint8_t> from, std::size_t max) {
  auto current = keys.current();
  cursor c{t, dbi};
  MDB_val k = as_val(from), v;
  std::size_t seen = 0;
  int rc = mdb_cursor_get(c.get(), &k, &v, from.empty() ? MDB_FIRST : MDB_SET_RANGE);
  while (rc == MDB_SUCCESS && seen < max) {
    ++seen;
    std::span<const std::uint8_t> value{static_cast<const std::uint8_t*>(v.mv_data), v.mv_size};
    if (keyring::key_id_of(value) != current) {
      std::vector<std::uint8_t> key(static_cast<const std::uint8_t*>(k.mv_data),
                                    static_cast<const std::uint8_t*>(k.mv_data) + k.mv_size);
      if (auto plain = keys.open(table, key, value)) {
        auto sealed = keys.seal(table, key, *plain);
        MDB_val nv = as_val(std::span<const std::uint8_t>{sealed});
        check(mdb_cursor_put(c.get(), &k, &nv, MDB_CURRENT), "re-seal a value");
      }
    }
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  std::vector<std::uint8_t> next;
  if (rc == MDB_SUCCESS)
    next.assign(static_cast<const std::uint8_t*>(k.mv_data),
                static_cast<const std::uint8_t*>(k.mv_data) + k.mv_size);
  else if (rc != MDB_NOTFOUND)
    check(rc, "walk values to re-seal");
  c.close(); // LMDB frees a write transaction's cursors at its commit
  return next;
}

// The administrative members write LMDB before taking the exclusive lock:
// a writer inside an LMDB transaction may be sealing (shared lock) and must
// not wait on one of them waiting for LMDB's writer lock.
std::uint32_t keyring::rotate() {
  std::lock_guard admin{admin_mutex_};
  auto& in = env_.internals();
  auto dek = random_key();
  std::uint32_t id = 0;
  key256 kek;
  {
    std::shared_lock lock{mutex_};
    id = keys_.rbegin()->first + 1;
    kek = kek_;
  }
  txn t{in.env, true};
  store_wrapped(t.get(), in.keys, id, kek, dek);
  put_u64(t.get(), in.keys, current_key, id);
  t.commit();
  std::unique_lock lock{mutex_};
  keys_.emplace(id, dek);
  current_ = id;
  return id;
}

void keyring::retire(std::uint32_t id) {
  std::lock_guard admin{admin_mutex_};
  auto& in = env_.internals();
  {
    std::shared_lock lock{mutex_};
    if (id == current_ || !keys_.contains(id))
      return;
  }
  txn t{in.env, true};
  auto name = dek_name(id);
  MDB_val k{name.size(), name.data()};
  int rc = mdb_del(t.get(), in.keys, &k, nullptr);
  if (rc != MDB_NOTFOUND)
    check(rc, "delete wrapped data key");
  t.commit();
  std::unique_lock lock{mutex_};
  OPENSSL_cleanse(keys_[id].data(), 32);
  keys_.erase(id);
}

void keyring::rewrap(const key256& kek) {
  std::lock_guard admin{admin_mutex_};
  auto& in = env_.internals();
  std::map<std::uint32_t, key256> keys;
  {
    std::shared_lock lock{mutex_};
    keys = keys_;
  }
  txn t{in.env, true};
  for (const auto& [id, dek] : keys)
    store_wrapped(t.get(), in.keys, id, kek, dek);
  t.commit();
  for (auto& [id, dek] : keys)
    OPENSSL_cleanse(dek.data(), dek.size());
  std::unique_lock lock{mutex_};
  kek_ = kek;
}

} // namespace lockbridge::store
