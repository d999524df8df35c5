#include "store/environment.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "store/lmdb_detail.hpp"
#include "store/state_check.hpp"

namespace lockbridge::store {

store_error::kind kind_of_lmdb_error(int rc) noexcept {
  switch (rc) {
  case MDB_CORRUPTED:
  case MDB_PAGE_NOTFOUND:
  case MDB_INVALID:
  case MDB_VERSION_MISMATCH:
  case MDB_INCOMPATIBLE:
  case MDB_BAD_DBI:
    return store_error::kind::damaged;
  case MDB_PANIC: return store_error::kind::panic;
  case MDB_MAP_FULL:
  case ENOSPC:
  case EDQUOT:
  case EIO:
  case EFBIG:
    return store_error::kind::storage;
  case EACCES:
  case EPERM:
  case EROFS:
  case ENOENT:
    return store_error::kind::unusable;
  default: return store_error::kind::other;
  }
}

void throw_lmdb(const char* what, int rc) {
  throw store_error{std::string{"LMDB "} + what + " failed: " + mdb_strerror(rc),
                    kind_of_lmdb_error(rc)};
}

std::uint64_t get_u64(MDB_txn* t, MDB_dbi dbi, std::string_view key, std::uint64_t fallback) {
  MDB_val k = as_val(key);
  MDB_val v;
  int rc = mdb_get(t, dbi, &k, &v);
  if (rc == MDB_NOTFOUND)
    return fallback;
  check(rc, "read meta value");
  if (v.mv_size != 8)
    throw store_error{"LMDB meta value '" + std::string{key} + "' is damaged (size "
                        + std::to_string(v.mv_size) + ", expected 8)",
                      store_error::kind::damaged};
  return get_be64(v.mv_data);
}

void put_u64(MDB_txn* t, MDB_dbi dbi, std::string_view key, std::uint64_t value) {
  std::uint8_t buf[8];
  put_be64(buf, value);
  MDB_val k = as_val(key);
  MDB_val v{8, buf};
  check(mdb_put(t, dbi, &k, &v, 0), "write meta value");
}

environment::environment(const std::filesystem::path& dir, std::uint64_t map_size,
                         bool exclusive, bool start_empty)
  : impl_(std::make_unique<impl>()) {
  impl_->dir = dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw store_error{"cannot create state directory " + dir.string() + ": " + ec.message(),
                      store_error::kind::unusable};
  if (exclusive) {
    auto lock_path = dir / "lockbridge.lock";
    impl_->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (impl_->lock_fd < 0)
      throw store_error{"cannot open " + lock_path.string() + ": " + std::strerror(errno)
                          + " (the state directory must be writable by the service's user)",
                        store_error::kind::unusable};
    if (::flock(impl_->lock_fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(impl_->lock_fd);
      throw store_error{"another lockbridge process is using the state in " + dir.string()
                          + "; stop it first (systemctl stop lockbridge)",
                        store_error::kind::in_use};
    }
  }
  try {
    if (exclusive) {
      preflight_state(dir, start_empty);
    } else if (std::filesystem::exists(dir / "data.mdb", ec)) {
      if (auto problem = check_meta_pages(dir))
        throw store_error{*problem, store_error::kind::damaged};
      if (auto problem = walk_in_child(dir, std::chrono::seconds{120}))
        throw store_error{(dir / "data.mdb").string() + " is damaged: " + *problem,
                          store_error::kind::damaged};
    }
  } catch (...) {
    if (impl_->lock_fd >= 0)
      ::close(impl_->lock_fd);
    throw;
  }
  check(mdb_env_create(&impl_->env), "create environment");
  try {
    check(mdb_env_set_maxdbs(impl_->env, 16), "set max databases");
    check(mdb_env_set_mapsize(impl_->env, map_size), "set map size");
    // NOTLS: read transactions are not bound to threads (CAF moves actors
    // between threads). Full sync on commit: acknowledged means on disk.
    int rc = mdb_env_open(impl_->env, dir.c_str(), MDB_NOTLS, 0600);
    if (rc != MDB_SUCCESS)
      throw store_error{"cannot open LMDB environment in " + dir.string() + ": "
                          + mdb_strerror(rc),
                        kind_of_lmdb_error(rc)};
    txn t{impl_->env, true};
    check(mdb_dbi_open(t.get(), "meta", MDB_CREATE, &impl_->meta), "open meta database");
    check(mdb_dbi_open(t.get(), "journal", MDB_CREATE, &impl_->journal),
          "open journal database");
    check(mdb_dbi_open(t.get(), "progress", MDB_CREATE, &impl_->progress),
          "open progress database");
    check(mdb_dbi_open(t.get(), "credentials", MDB_CREATE, &impl_->credentials),
          "open credentials database");
    check(mdb_dbi_open(t.get(), "subjects", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED,
                       &impl_->subjects),
          "open subjects database");
    check(mdb_dbi_open(t.get(), "keys", MDB_CREATE, &impl_->keys), "open keys database");
    check(mdb_dbi_open(t.get(), "epochs", MDB_CREATE, &impl_->epochs), "open epochs database");
    check(mdb_dbi_open(t.get(), "audit", MDB_CREATE, &impl_->audit), "open audit database");
    check(mdb_dbi_open(t.get(), "quarantine", MDB_CREATE, &impl_->quarantine),
          "open quarantine database");
    check(mdb_dbi_open(t.get(), "commands", MDB_CREATE, &impl_->commands),
          "open commands database");
    check(mdb_dbi_open(t.get(), "outbox", MDB_CREATE, &impl_->outbox), "open outbox database");
    auto version = get_u64(t.get(), impl_->meta, "schema_version", 0);
    if (version == 0)
      put_u64(t.get(), impl_->meta, "schema_version", schema_version);
    else if (version == 1)
      throw store_error{"state in " + dir.string() + " was written by an earlier lockbridge "
                        "(schema 1, values not sealed); this build seals every value (schema 2) "
                        "and does not convert it: deliver its backlog with the old version, "
                        "then move the directory away (docs/operations.md, Upgrade)",
                      store_error::kind::foreign};
    else if (version != schema_version)
      throw store_error{"state in " + dir.string() + " has schema version "
                        + std::to_string(version) + ", this build reads version "
                        + std::to_string(schema_version)
                        + "; upgrade lockbridge or restore a matching backup",
                      store_error::kind::foreign};
    t.commit();
  } catch (const store_error& e) {
    mdb_env_close(impl_->env);
    if (impl_->lock_fd >= 0)
      ::close(impl_->lock_fd);
    if (e.why() == store_error::kind::damaged)
      throw store_error{(dir / "data.mdb").string() + " is damaged: " + e.what()
                          + ". Run `lockbridge state check`, then salvage or restore "
                            "(docs/operations.md, Recovery)",
                        store_error::kind::damaged};
    throw;
  } catch (...) {
    mdb_env_close(impl_->env);
    if (impl_->lock_fd >= 0)
      ::close(impl_->lock_fd);
    throw;
  }
}

environment::~environment() {
  mdb_env_close(impl_->env);
  if (impl_->lock_fd >= 0)
    ::close(impl_->lock_fd);
}

const std::filesystem::path& environment::dir() const noexcept {
  return impl_->dir;
}

} // namespace lockbridge::store
