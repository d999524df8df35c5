#include "store/state_check.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "store/lmdb_detail.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

namespace {

constexpr std::string_view identity_key = "identity";
constexpr std::uint32_t lmdb_magic = 0xBEEFC0DE;
constexpr std::uint32_t lmdb_data_version = 1;
constexpr std::uint16_t page_meta = 0x08;
constexpr std::uint64_t invalid_page = ~std::uint64_t{0};

std::uint16_t le16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
std::uint32_t le32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16)
         | (std::uint32_t{p[3]} << 24);
}
std::uint64_t le64(const std::uint8_t* p) {
  return std::uint64_t{le32(p)} | (std::uint64_t{le32(p + 4)} << 32);
}

/// One of LMDB's meta pages as LMDB 0.9 lays it out on a 64-bit little-endian
/// machine: a 16-byte page header, then MDB_meta (magic, version, address,
/// map size, the free and main databases of 48 bytes each, last page, txn id).
struct meta_page {
  std::uint32_t page_size = 0;
  std::uint64_t free_root = 0, main_root = 0, last_page = 0, txnid = 0;
};

std::optional<meta_page> parse_meta(const std::uint8_t* page, std::string& why) {
  if ((le16(page + 10) & page_meta) == 0) {
    why = "is not marked as a meta page";
    return std::nullopt;
  }
  const std::uint8_t* m = page + 16;
  if (le32(m) != lmdb_magic) {
    why = "has no LMDB magic number";
    return std::nullopt;
  }
  if (le32(m + 4) != lmdb_data_version) {
    why = "has LMDB format version " + std::to_string(le32(m + 4)) + ", expected 1";
    return std::nullopt;
  }
  meta_page out;
  const std::uint8_t* free_db = m + 24;
  const std::uint8_t* main_db = m + 24 + 48;
  out.page_size = le32(free_db); // LMDB keeps the page size in the free DB's pad
  out.free_root = le64(free_db + 40);
  out.main_root = le64(main_db + 40);
  out.last_page = le64(m + 120);
  out.txnid = le64(m + 128);
  if (out.page_size < 512 || out.page_size > 65536 || (out.page_size & (out.page_size - 1)) != 0) {
    why = "names an impossible page size (" + std::to_string(out.page_size) + ")";
    return std::nullopt;
  }
  for (auto root : {out.free_root, out.main_root})
    if (root != invalid_page && (root < 2 || root > out.last_page)) {
      why = "points to a root page (" + std::to_string(root) + ") outside the file's "
            + std::to_string(out.last_page + 1) + " pages";
      return std::nullopt;
    }
  return out;
}

std::string hex_of(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (auto b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

/// Reads one byte of every memory page a record spans outside the page its
/// key is on (which the cursor has just read), so that a page beyond the
/// file, a page the disk cannot read or a wild pointer faults here, in the
/// child, rather than later in the daemon. A fault is per page: reading
/// every byte of every record, as the first version did, found nothing more
/// and took a third of a start-up with two million records.
std::uint64_t touch(const MDB_val& k, const MDB_val& v) {
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto home = reinterpret_cast<std::uintptr_t>(k.mv_data) / page;
  std::uint64_t sum = 0;
  for (const auto* r : {&k, &v}) {
    if (r->mv_size == 0)
      continue;
    auto first = reinterpret_cast<std::uintptr_t>(r->mv_data);
    auto last = first + r->mv_size - 1;
    if (first / page == home && last / page == home)
      continue;
    sum += *reinterpret_cast<const volatile std::uint8_t*>(last);
    for (auto a = first; a <= last; a = (a / page + 1) * page)
      sum += *reinterpret_cast<const volatile std::uint8_t*>(a);
  }
  return sum;
}

/// Names of the named databases in an open read transaction.
std::vector<std::string> table_names(MDB_txn* t) {
  MDB_dbi main_dbi;
  check(mdb_dbi_open(t, nullptr, 0, &main_dbi), "open the main database");
  cursor c{t, main_dbi};
  MDB_val k, v;
  std::vector<std::string> out;
  for (int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
       rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT))
    out.emplace_back(static_cast<const char*>(k.mv_data), k.mv_size);
  return out;
}

/// An environment opened read-only for a walk (no lock on the directory).
struct raw_env {
  MDB_env* env = nullptr;
  explicit raw_env(const std::filesystem::path& dir, unsigned flags = MDB_RDONLY) {
    check(mdb_env_create(&env), "create environment");
    mdb_env_set_maxdbs(env, 64);
    int rc = mdb_env_open(env, dir.c_str(), flags | MDB_NOTLS, 0600);
    if (rc != MDB_SUCCESS) {
      mdb_env_close(env);
      env = nullptr;
      throw_lmdb("open the environment", rc);
    }
  }
  ~raw_env() {
    if (env != nullptr)
      mdb_env_close(env);
  }
  raw_env(const raw_env&) = delete;
  raw_env& operator=(const raw_env&) = delete;
};

std::uint64_t size_of(const std::filesystem::path& p) {
  std::error_code ec;
  auto n = std::filesystem::file_size(p, ec);
  return ec ? 0 : n;
}

/// Maps the whole file's pages in one call before the walk: the walk reads
/// nearly every page anyway, and one sequential pass costs less than a
/// fault per page in B-tree order (on a cold page cache, after a power
/// cut, it is one sequential read instead of many random ones). A page the
/// call cannot map is left to the walk, which faults on it and says so.
void prefault(MDB_env* env, const std::filesystem::path& file) {
  MDB_envinfo info{};
  if (mdb_env_info(env, &info) != MDB_SUCCESS || info.me_mapaddr == nullptr)
    return;
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  auto length = std::min<std::uint64_t>(size_of(file), info.me_mapsize) / page * page;
  if (length > 0)
    ::madvise(info.me_mapaddr, length, MADV_POPULATE_READ);
}

/// The walk the child runs. Returns the problem, or empty.
std::string walk_all(const std::filesystem::path& dir, std::uint64_t max_items, bool write_probe) {
  try {
    raw_env e{dir, write_probe ? 0u : static_cast<unsigned>(MDB_RDONLY)};
    prefault(e.env, dir / "data.mdb");
    txn t{e.env, false};
    std::uint64_t items = 0, sum = 0;
    auto walk = [&](MDB_dbi dbi, const std::string& name) {
      cursor c{t.get(), dbi};
      MDB_val k, v;
      std::uint64_t here = 0;
      int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
      for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
        sum += touch(k, v);
        ++here;
        if (++items > max_items)
          throw store_error{"table " + name + " holds more records than the file has room for "
                            "(a loop in its pages)"};
      }
      if (rc != MDB_NOTFOUND)
        throw_lmdb(("walk table " + name).c_str(), rc);
      // LMDB pages carry no checksum: a page overwritten with bytes that
      // still parse can hide its records. The table's own count, kept in
      // its parent, says how many the walk must have met.
      MDB_stat st{};
      check(mdb_stat(t.get(), dbi, &st), "count a table");
      if (st.ms_entries != here)
        throw store_error{"table " + name + " counts " + std::to_string(st.ms_entries)
                          + " records but a walk reaches " + std::to_string(here)
                          + " (a page of it was overwritten)"};
    };
    walk(0, "(free pages)");
    for (const auto& name : table_names(t.get())) {
      MDB_dbi dbi;
      check(mdb_dbi_open(t.get(), name.c_str(), 0, &dbi), "open a table");
      walk(dbi, name);
    }
    // A checksum nobody needs, published so that the reads happen.
    static std::atomic<std::uint64_t> sink;
    sink.store(sum, std::memory_order_relaxed);
    t.commit();
    // The daemon's first steps take the write path, which reads more of the
    // file (the free list, page bounds checked against the last page):
    // take them here too, in a write transaction that is aborted.
    if (write_probe) {
      txn w{e.env, true};
      MDB_dbi meta;
      check(mdb_dbi_open(w.get(), "meta", MDB_CREATE, &meta), "open the meta table for writing");
      for (const auto& name : table_names(w.get())) {
        MDB_dbi dbi;
        check(mdb_dbi_open(w.get(), name.c_str(), 0, &dbi), "open a table for writing");
      }
      std::string probe(3000, 'p');
      MDB_val k = as_val(std::string_view{"\xff lockbridge write probe"});
      MDB_val v = as_val(std::string_view{probe});
      check(mdb_put(w.get(), meta, &k, &v, 0), "write a probe record");
      check(mdb_del(w.get(), meta, &k, nullptr), "remove the probe record");
      // w aborts on destruction: nothing reaches the file.
    }
    return {};
  } catch (const std::exception& e) {
    return e.what();
  }
}

/// Runs `body` in a child process and returns what it wrote to its pipe,
/// or the way it died. `body` returns an empty text on success.
template <class Body>
std::optional<std::string> in_child(Body body, std::chrono::seconds limit,
                                    std::string* progress = nullptr) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return std::string{"cannot create a pipe: "} + std::strerror(errno);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return std::string{"cannot fork the checking process: "} + std::strerror(errno);
  }
  if (pid == 0) {
    ::close(fds[0]);
    ::signal(SIGPIPE, SIG_IGN);
    std::string why = body(fds[1]);
    if (!why.empty()) {
      std::string line = "\nERROR " + why;
      [[maybe_unused]] auto n = ::write(fds[1], line.data(), line.size());
      ::_exit(1);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  bool exited = false;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    int rc = ::poll(&p, 1, 50);
    if (rc > 0) {
      char buf[4096];
      auto n = ::read(fds[0], buf, sizeof buf);
      if (n > 0)
        text.append(buf, static_cast<std::size_t>(n));
    }
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fds[0], buf, sizeof buf)) > 0)
        text.append(buf, static_cast<std::size_t>(n));
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
  }
  ::close(fds[0]);
  if (progress != nullptr)
    *progress = text;
  if (!exited)
    return "the walk did not end within " + std::to_string(limit.count())
           + " s (a loop in the file's pages?)";
  if (WIFSIGNALED(status))
    return std::string{"reading it crashed ("} + ::strsignal(WTERMSIG(status))
           + "): its pages are damaged";
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return std::nullopt;
  auto at = text.rfind("\nERROR ");
  return at == std::string::npos ? std::string{"the checking process failed"}
                                 : text.substr(at + 7);
}

} // namespace

std::string state_identity::to_text() const {
  return "lockbridge-state 1\nsite " + site + "\ngateway " + gateway + "\nstate_id " + state_id
         + "\ncreated_at " + std::to_string(created_at) + "\n";
}

std::optional<state_identity> state_identity::from_text(std::string_view text) {
  std::istringstream in{std::string{text}};
  std::string line;
  if (!std::getline(in, line) || line != "lockbridge-state 1")
    return std::nullopt;
  state_identity id;
  while (std::getline(in, line)) {
    auto space = line.find(' ');
    if (space == std::string::npos)
      return std::nullopt;
    auto key = line.substr(0, space);
    auto value = line.substr(space + 1);
    if (key == "site")
      id.site = value;
    else if (key == "gateway")
      id.gateway = value;
    else if (key == "state_id")
      id.state_id = value;
    else if (key == "created_at") {
      try {
        id.created_at = std::stoll(value);
      } catch (const std::exception&) {
        return std::nullopt;
      }
    }
  }
  if (id.site.empty() || id.gateway.empty() || id.state_id.size() != 32)
    return std::nullopt;
  return id;
}

std::optional<state_identity> read_identity_file(const std::filesystem::path& dir) {
  auto path = dir / "identity";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return std::nullopt;
  std::ifstream in{path};
  if (!in)
    throw store_error{"cannot read " + path.string() + ": " + std::strerror(errno),
                      store_error::kind::unusable};
  std::stringstream text;
  text << in.rdbuf();
  auto id = state_identity::from_text(text.str());
  if (!id)
    throw store_error{path.string() + " is damaged (it should say which gateway the state "
                                      "belongs to); restore it from a backup",
                      store_error::kind::damaged};
  return id;
}

void write_identity_file(const std::filesystem::path& dir, const state_identity& id) {
  auto path = dir / "identity";
  auto tmp = dir / "identity.tmp";
  auto text = id.to_text();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size())
            && ::fsync(fd) == 0;
  int err = errno;
  if (fd >= 0)
    ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
    throw store_error{"cannot write " + path.string() + ": " + std::strerror(ok ? errno : err),
                      store_error::kind::unusable};
  if (int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
    ::fsync(d);
    ::close(d);
  }
}

state_identity new_identity(const std::string& site, const std::string& gateway,
                            std::int64_t now_ms) {
  std::array<std::uint8_t, 16> raw{};
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    throw store_error{"OpenSSL's random generator failed"};
  return {site, gateway, hex_of(raw), now_ms};
}

std::optional<std::string> check_meta_pages(const std::filesystem::path& dir) {
  auto path = dir / "data.mdb";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? std::nullopt
                           : std::optional<std::string>{"cannot read " + path.string() + ": "
                                                        + std::strerror(errno)};
  struct stat st {};
  ::fstat(fd, &st);
  auto size = static_cast<std::uint64_t>(st.st_size);
  std::vector<std::uint8_t> head(2 * 65536);
  auto n = ::pread(fd, head.data(), head.size(), 0);
  ::close(fd);
  if (n < 0)
    return "cannot read " + path.string() + ": " + std::strerror(errno);
  head.resize(static_cast<std::size_t>(n));
  auto damaged = [&](const std::string& why) {
    return path.string() + " is damaged: " + why;
  };
  if (head.size() < 512)
    return damaged("it is " + std::to_string(size) + " bytes, shorter than LMDB's first page");
  std::string why0, why1;
  auto m0 = parse_meta(head.data(), why0);
  std::uint32_t psize = m0 ? m0->page_size : 4096;
  if (head.size() < 2 * static_cast<std::size_t>(psize))
    return damaged("it is " + std::to_string(size) + " bytes, shorter than LMDB's two meta pages");
  auto m1 = parse_meta(head.data() + psize, why1);
  if (!m0 && !m1)
    return damaged("neither of LMDB's two meta pages is valid (the first " + why0
                   + ", the second " + why1 + ")");
  if (!m0)
    return damaged("LMDB's first meta page " + why0);
  if (!m1)
    return damaged("LMDB's second meta page " + why1);
  if (m0->page_size != m1->page_size)
    return damaged("LMDB's two meta pages disagree on the page size");
  const auto& newest = m0->txnid >= m1->txnid ? *m0 : *m1;
  auto needed = (newest.last_page + 1) * newest.page_size;
  if (size < needed)
    return damaged("it is " + std::to_string(size) + " bytes but its pages reach "
                   + std::to_string(needed) + " bytes (the file was cut short)");
  return std::nullopt;
}

std::optional<std::string> walk_in_child(const std::filesystem::path& dir,
                                         std::chrono::seconds limit, bool write_probe) {
  // No page holds more than a few hundred records; a walk that counts more
  // than that per page of the file is going round in circles.
  auto max_items = size_of(dir / "data.mdb") / 8 + 1024;
  return in_child([&](int) { return walk_all(dir, max_items, write_probe); }, limit);
}

void preflight_state(const std::filesystem::path& dir, bool start_empty) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw store_error{"cannot create the state directory " + dir.string() + ": " + ec.message(),
                      store_error::kind::unusable};
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0)
    throw store_error{"the state directory " + dir.string() + " is not writable by this user ("
                        + std::strerror(errno)
                        + "); under systemd, StateDirectory= makes it; by hand: chown "
                          "lockbridge: "
                        + dir.string(),
                      store_error::kind::unusable};
  auto identity = read_identity_file(dir);
  auto data = dir / "data.mdb";
  bool present = std::filesystem::exists(data, ec);
  if (identity && (!present || size_of(data) == 0) && !start_empty)
    throw store_error{"the state of gateway " + identity->site + "/" + identity->gateway
                        + " (recorded in " + (dir / "identity").string() + ") is gone: "
                        + data.string() + (present ? " is empty" : " is missing")
                        + ". Restore it from a backup or salvage a copy (docs/operations.md, "
                          "Recovery); to start with no state on purpose, run once with "
                          "--start-empty",
                      store_error::kind::damaged};
  if (!present || size_of(data) == 0)
    return;
  if (auto problem = check_meta_pages(dir))
    throw store_error{*problem + ". Run `lockbridge state check`, then salvage or restore "
                                 "(docs/operations.md, Recovery)",
                      store_error::kind::damaged};
  auto limit = std::chrono::seconds{static_cast<std::chrono::seconds::rep>(60 + size_of(data) / (64ull << 20))};
  if (auto problem = walk_in_child(dir, limit, true))
    throw store_error{data.string() + " is damaged: " + *problem
                        + ". Run `lockbridge state check`, then salvage or restore "
                          "(docs/operations.md, Recovery)",
                      store_error::kind::damaged};
}

bool bind_identity(environment& env, const std::string& site, const std::string& gateway,
                   bool start_empty, std::int64_t now_ms) {
  auto& in = env.internals();
  auto file = read_identity_file(env.dir());
  std::optional<state_identity> inside;
  {
    txn t{in.env, false};
    MDB_val k = as_val(identity_key), v;
    int rc = mdb_get(t.get(), in.meta, &k, &v);
    if (rc == MDB_SUCCESS) {
      inside = state_identity::from_text({static_cast<const char*>(v.mv_data), v.mv_size});
      if (!inside)
        throw store_error{"the identity recorded inside " + (env.dir() / "data.mdb").string()
                            + " is damaged",
                          store_error::kind::damaged};
    } else if (rc != MDB_NOTFOUND) {
      check(rc, "read the state's identity");
    }
  }
  auto where = [&](const state_identity& id) { return id.site + "/" + id.gateway; };
  if (inside && file && inside->state_id != file->state_id)
    throw store_error{"the data file in " + env.dir().string() + " is not the one its identity "
                        "file records (state " + inside->state_id.substr(0, 8) + " of "
                        + where(*inside) + " where " + file->state_id.substr(0, 8) + " of "
                        + where(*file) + " was expected): a file copied from elsewhere? "
                          "Restore the right one (docs/operations.md, Recovery)",
                      store_error::kind::foreign};
  if (inside && (inside->site != site || inside->gateway != gateway))
    throw store_error{"the state in " + env.dir().string() + " belongs to gateway "
                        + where(*inside) + ", not to " + site + "/" + gateway
                        + " as configured; point store.state_dir at this gateway's own state",
                      store_error::kind::foreign};
  bool made = false;
  if (!inside) {
    // A new state, one from before identities were recorded, or one emptied
    // on purpose (--start-empty): it is this gateway's from now on.
    if (file && !start_empty && (file->site != site || file->gateway != gateway))
      throw store_error{"the state directory " + env.dir().string() + " belongs to gateway "
                          + where(*file) + ", not to " + site + "/" + gateway,
                        store_error::kind::foreign};
    inside = file && !start_empty ? *file : new_identity(site, gateway, now_ms);
    auto text = inside->to_text();
    txn t{in.env, true};
    MDB_val k = as_val(identity_key), v = as_val(std::string_view{text});
    check(mdb_put(t.get(), in.meta, &k, &v, 0), "record the state's identity");
    t.commit();
    made = !file || start_empty;
  }
  if (!file || *file != *inside)
    write_identity_file(env.dir(), *inside);
  return made;
}

bool check_report::ok() const {
  if (structure)
    return false;
  for (const auto& t : tables)
    if (t.unreadable > 0)
      return false;
  return true;
}

std::vector<table_report> check_values(environment& env, const keyring& keys) {
  auto& in = env.internals();
  std::vector<table_report> out;
  txn t{in.env, false};
  auto walk = [&](MDB_dbi dbi, std::string_view table, bool sealed) {
    table_report r{std::string{table}, 0, 0};
    cursor c{t.get(), dbi};
    MDB_val k, v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
    for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      ++r.records;
      std::span<const std::uint8_t> key{static_cast<const std::uint8_t*>(k.mv_data), k.mv_size};
      std::span<const std::uint8_t> value{static_cast<const std::uint8_t*>(v.mv_data), v.mv_size};
      if (sealed && !keys.open(table, key, value))
        ++r.unreadable;
    }
    if (rc != MDB_NOTFOUND)
      throw_lmdb(("walk table " + std::string{table}).c_str(), rc);
    out.push_back(r);
  };
  walk(in.journal, table::journal, true);
  walk(in.credentials, table::credentials, true);
  walk(in.epochs, table::epochs, true);
  walk(in.audit, table::audit, true);
  walk(in.outbox, table::outbox, true);
  walk(in.progress, "progress", false);
  walk(in.subjects, "subjects", false);
  walk(in.quarantine, "quarantine", false);
  walk(in.commands, "commands", false);
  walk(in.keys, "keys", false);
  walk(in.meta, "meta", false);
  return out;
}

salvage_report salvage_raw(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (std::filesystem::exists(to / "data.mdb") && size_of(to / "data.mdb") > 0)
    throw store_error{(to / "data.mdb").string() + " exists; salvage writes into a new, empty "
                                                   "directory",
                      store_error::kind::unusable};
  std::error_code ec;
  std::filesystem::create_directories(to, ec);
  if (ec)
    throw store_error{"cannot create " + to.string() + ": " + ec.message(),
                      store_error::kind::unusable};
  salvage_report report;
  // The table names and their record counts (from the main database, which
  // the meta pages point to directly), read in a child too.
  std::string listing;
  auto problem = in_child(
    [&](int out) -> std::string {
      try {
        raw_env e{from};
        txn t{e.env, false};
        for (const auto& name : table_names(t.get())) {
          MDB_dbi dbi;
          MDB_stat st{};
          std::string line = name + "\t";
          if (mdb_dbi_open(t.get(), name.c_str(), 0, &dbi) == MDB_SUCCESS
              && mdb_stat(t.get(), dbi, &st) == MDB_SUCCESS)
            line += std::to_string(st.ms_entries);
          line += "\n";
          [[maybe_unused]] auto n = ::write(out, line.data(), line.size());
        }
        return {};
      } catch (const std::exception& e) {
        return e.what();
      }
    },
    std::chrono::seconds{60}, &listing);
  if (problem)
    throw store_error{"cannot list the tables of " + (from / "data.mdb").string() + ": "
                        + *problem + "; nothing can be salvaged from it (restore a backup)",
                      store_error::kind::damaged};
  std::vector<std::pair<std::string, std::uint64_t>> tables;
  std::istringstream lines{listing};
  for (std::string line; std::getline(lines, line);) {
    auto tab = line.find('\t');
    if (tab == std::string::npos || tab == 0)
      continue;
    std::uint64_t n = 0;
    try {
      n = std::stoull(line.substr(tab + 1));
    } catch (const std::exception&) {
    }
    tables.emplace_back(line.substr(0, tab), n);
  }
  auto map_size = std::max<std::uint64_t>(size_of(from / "data.mdb") * 2, 1ull << 30);
  // Copies one table, forward (from the first record) or backward (from the
  // last), committing every 256 records so a crash keeps what came before.
  auto copy = [&](const std::string& name, bool forward) {
    return in_child(
      [&](int) -> std::string {
        try {
          raw_env src{from};
          MDB_env* dst = nullptr;
          check(mdb_env_create(&dst), "create environment");
          mdb_env_set_maxdbs(dst, 64);
          mdb_env_set_mapsize(dst, map_size);
          check(mdb_env_open(dst, to.c_str(), MDB_NOTLS, 0600), "open the new environment");
          txn s{src.env, false};
          MDB_dbi sdbi;
          check(mdb_dbi_open(s.get(), name.c_str(), 0, &sdbi), "open a table");
          unsigned flags = 0;
          mdb_dbi_flags(s.get(), sdbi, &flags);
          cursor c{s.get(), sdbi};
          MDB_val k, v;
          int rc = mdb_cursor_get(c.get(), &k, &v, forward ? MDB_FIRST : MDB_LAST);
          while (rc == MDB_SUCCESS) {
            txn d{dst, true};
            MDB_dbi ddbi;
            check(mdb_dbi_open(d.get(), name.c_str(), MDB_CREATE | (flags & 0xffff), &ddbi),
                  "create a table");
            for (int i = 0; i < 256 && rc == MDB_SUCCESS; ++i) {
              touch(k, v);
              // A record whose sizes are garbage is skipped, not copied.
              if (int put = mdb_put(d.get(), ddbi, &k, &v, 0); put != MDB_BAD_VALSIZE)
                check(put, "copy a record");
              rc = mdb_cursor_get(c.get(), &k, &v, forward ? MDB_NEXT : MDB_PREV);
            }
            d.commit();
          }
          mdb_env_close(dst);
          if (rc != MDB_NOTFOUND)
            throw_lmdb(("walk table " + name).c_str(), rc);
          return {};
        } catch (const std::exception& e) {
          return e.what();
        }
      },
      std::chrono::seconds{600});
  };
  for (const auto& [name, expected] : tables) {
    if (auto failed = copy(name, true)) {
      report.notes.push_back("table " + name + ": the walk from the start stopped: " + *failed
                             + "; walking back from the end");
      if (auto again = copy(name, false))
        report.notes.push_back("table " + name + ": the walk from the end stopped too: " + *again);
    }
  }
  // What arrived, per table (the new file is sound: a plain read).
  raw_env dst{to, 0};
  txn t{dst.env, false};
  for (const auto& [name, expected] : tables) {
    MDB_dbi dbi;
    MDB_stat st{};
    std::uint64_t copied = 0;
    if (mdb_dbi_open(t.get(), name.c_str(), 0, &dbi) == MDB_SUCCESS
        && mdb_stat(t.get(), dbi, &st) == MDB_SUCCESS)
      copied = st.ms_entries;
    report.copied.push_back({name, copied, 0});
    report.lost.push_back({name, expected > copied ? expected - copied : 0, 0});
  }
  return report;
}

} // namespace lockbridge::store
