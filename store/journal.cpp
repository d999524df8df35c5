#include "store/journal.hpp"

#include "protocols/clock_guard.hpp"
#include "store/lmdb_detail.hpp"

namespace lockbridge::store {

namespace {

constexpr std::string_view key_next = "journal.next_key";
constexpr std::string_view key_count = "journal.count";
constexpr std::string_view key_bytes = "journal.bytes";

/// Bytes an entry is accounted for: key, value and a fixed per-entry overhead
/// close to LMDB's node header, so the bound tracks the file's growth.
std::uint64_t accounted(std::size_t value_size) {
  return 8 + value_size + 16;
}

std::span<const std::uint8_t> bytes_of(const MDB_val& v) {
  return {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size};
}

/// The record in a sealed journal value, if it opens and decodes.
std::optional<protocol::journal_record> open_record(const keyring& keys, const MDB_val& k,
                                                    const MDB_val& v) {
  auto plain = keys.open(table::journal, bytes_of(k), bytes_of(v));
  if (!plain)
    return std::nullopt;
  auto rec = protocol::decode_record(*plain);
  if (!rec)
    return std::nullopt;
  return std::move(*rec);
}

/// Deletes entries from the start while `keep_going(key, value)` holds.
template <class Predicate>
std::pair<std::uint64_t, std::uint64_t> delete_front(MDB_txn* t, MDB_dbi dbi,
                                                     Predicate keep_going) {
  cursor c{t, dbi};
  MDB_val k, v;
  std::uint64_t removed = 0, bytes = 0;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    if (k.mv_size != 8 || !keep_going(get_be64(k.mv_data), v))
      break;
    bytes += accounted(v.mv_size);
    check(mdb_cursor_del(c.get(), 0), "delete journal entry");
    ++removed;
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    check(rc, "walk journal");
  return {removed, bytes};
}

} // namespace

journal::journal(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys, journal_limits limits)
  : sealed_log(std::move(env), std::move(keys), table::journal), limits_(limits) {
  auto& in = env_.internals();
  txn t{in.env, false};
  next_key_ = get_u64(t.get(), in.meta, key_next, 1);
  count_ = get_u64(t.get(), in.meta, key_count, 0);
  bytes_ = get_u64(t.get(), in.meta, key_bytes, 0);
  cursor c{t.get(), in.progress};
  MDB_val k, v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    if (v.mv_size == 8)
      progress_.emplace(std::string{static_cast<const char*>(k.mv_data), k.mv_size},
                        get_be64(v.mv_data));
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
}

void recount_journal(environment& env) {
  auto& in = env.internals();
  txn t{in.env, true};
  std::uint64_t count = 0, bytes = 0, last = 0;
  {
    cursor c{t.get(), in.journal};
    MDB_val k, v;
    int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
    for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
      ++count;
      bytes += accounted(v.mv_size);
      if (k.mv_size == 8)
        last = std::max(last, get_be64(k.mv_data));
    }
    if (rc != MDB_NOTFOUND)
      check(rc, "recount the journal");
  }
  put_u64(t.get(), in.meta, key_count, count);
  put_u64(t.get(), in.meta, key_bytes, bytes);
  put_u64(t.get(), in.meta, key_next,
          std::max(get_u64(t.get(), in.meta, key_next, 1), last + 1));
  t.commit();
}

std::vector<append_outcome> journal::append(std::span<const append_request> batches,
                                            std::uint64_t remove_upto) {
  std::lock_guard writer{writer_};
  auto& in = env_.internals();
  std::vector<append_outcome> outcomes(batches.size());
  txn t{in.env, true};
  std::uint64_t next = next_key_;
  std::uint64_t count = count_;
  std::uint64_t bytes = bytes_;
  std::map<std::string, std::uint64_t, std::less<>> touched;
  if (remove_upto > 0) {
    auto [removed, freed] = delete_front(t.get(), in.journal, [&](std::uint64_t key, const MDB_val&) {
      return key <= remove_upto;
    });
    count -= std::min(count, removed);
    bytes -= std::min(bytes, freed);
  }
  std::uint8_t key_buf[8];
  for (std::size_t i = 0; i < batches.size(); ++i) {
    const auto& batch = batches[i];
    auto& out = outcomes[i];
    auto prog_it = touched.find(batch.lock_id);
    std::uint64_t prog = prog_it != touched.end() ? prog_it->second : progress(batch.lock_id);
    std::vector<std::vector<std::uint8_t>> values;
    std::uint64_t batch_bytes = 0;
    std::uint64_t highest = prog;
    for (const auto& rec : batch.records) {
      if (batch.assign_seq) {
        auto numbered = rec;
        numbered.seq = highest + 1;
        values.push_back(protocol::encode_record(numbered));
      } else if (rec.seq <= highest) {
        ++out.duplicates;
        continue;
      } else {
        values.push_back(protocol::encode_record(rec));
      }
      batch_bytes += accounted(values.back().size() + keyring::overhead);
      highest = batch.assign_seq ? highest + 1 : rec.seq;
    }
    if (!values.empty() && bytes + batch_bytes > limits_.max_bytes) {
      out.result = append_outcome::status::refused_full;
      out.acked_seq = prog;
      out.duplicates = 0;
      continue;
    }
    for (const auto& value : values) {
      put_be64(key_buf, next);
      MDB_val k{8, key_buf};
      auto sealed = keys_->seal(table::journal, key_buf, value);
      MDB_val v = as_val(std::span<const std::uint8_t>{sealed});
      int rc = mdb_put(t.get(), in.journal, &k, &v, MDB_APPEND);
      if (rc == MDB_MAP_FULL) {
        // The file itself is full: refuse the whole group, nothing is written.
        for (auto& o : outcomes) {
          o = append_outcome{};
          o.result = append_outcome::status::refused_full;
        }
        for (std::size_t j = 0; j < batches.size(); ++j)
          outcomes[j].acked_seq = progress(batches[j].lock_id);
        return outcomes;
      }
      check(rc, "append journal entry");
      ++next;
    }
    out.stored = static_cast<std::uint32_t>(values.size());
    count += values.size();
    bytes += batch_bytes;
    if (highest > prog) {
      MDB_val k = as_val(std::string_view{batch.lock_id});
      std::uint8_t seq_buf[8];
      put_be64(seq_buf, highest);
      MDB_val v{8, seq_buf};
      check(mdb_put(t.get(), in.progress, &k, &v, 0), "write lock progress");
      touched[batch.lock_id] = highest;
    }
    out.acked_seq = highest;
  }
  put_u64(t.get(), in.meta, key_next, next);
  put_u64(t.get(), in.meta, key_count, count);
  put_u64(t.get(), in.meta, key_bytes, bytes);
  t.commit();
  next_key_ = next;
  count_ = count;
  bytes_ = bytes;
  for (auto& [lock, seq] : touched)
    progress_[lock] = seq;
  return outcomes;
}

void journal::remove_upto(std::uint64_t key) {
  append({}, key);
}

std::vector<journal_entry> journal::read(std::uint64_t from, std::size_t max,
                                         std::vector<std::uint64_t>* damaged) const {
  std::vector<journal_entry> out;
  out.reserve(std::min<std::size_t>(max, 4096));
  walk(from, max, damaged, [&](std::uint64_t key, std::span<const std::uint8_t> plain) {
    auto rec = protocol::decode_record(plain);
    if (rec)
      out.push_back(journal_entry{key, std::move(*rec)});
    return static_cast<bool>(rec);
  });
  return out;
}

bool journal::decodes(std::span<const std::uint8_t> plain) const {
  return static_cast<bool>(protocol::decode_record(plain));
}

journal::pending_count journal::pending_by_lock(std::size_t max) const {
  auto& in = env_.internals();
  pending_count out;
  txn t{in.env, false};
  cursor c{t.get(), in.journal};
  MDB_val k, v;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    if (out.read == max) {
      out.complete = false;
      break;
    }
    ++out.read;
    auto rec = open_record(*keys_, k, v);
    if (!rec)
      continue; // quarantine's business; not a lock's
    std::string_view lock{rec->lock};
    if (lock.ends_with(".access"))
      lock.remove_suffix(7);
    if (auto it = out.by_lock.find(lock); it != out.by_lock.end())
      ++it->second;
    else
      out.by_lock.emplace(std::string{lock}, 1);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    check(rc, "count the journal");
  return out;
}

std::uint64_t journal::purge_received_before(std::int64_t cutoff_ms) {
  std::lock_guard writer{writer_};
  auto& in = env_.internals();
  txn t{in.env, true};
  std::uint8_t key_buf[8];
  auto [removed, freed] = delete_front(t.get(), in.journal, [&](std::uint64_t key, const MDB_val& v) {
    put_be64(key_buf, key);
    auto rec = open_record(*keys_, MDB_val{8, key_buf}, v);
    // A damaged entry cannot be delivered; retention removes it like any other.
    return !rec || rec->received_at < cutoff_ms;
  });
  if (removed == 0)
    return 0;
  commit_removal(t, removed, freed);
  return removed;
}

std::uint64_t journal::quarantine(std::span<const std::uint64_t> keys) {
  std::lock_guard writer{writer_};
  txn t{env_.internals().env, true};
  auto moved = quarantine_in(t.get(), keys);
  if (moved.count == 0)
    return 0;
  commit_removal(t, moved.count, moved.value_bytes + moved.count * accounted(0));
  return moved.count;
}

std::uint64_t
journal::erase_matching(const std::function<bool(const protocol::journal_record&)>& match) {
  std::lock_guard writer{writer_};
  auto& in = env_.internals();
  txn t{in.env, true};
  cursor c{t.get(), in.journal};
  MDB_val k, v;
  std::uint64_t removed = 0, freed = 0;
  int rc = mdb_cursor_get(c.get(), &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    auto rec = open_record(*keys_, k, v);
    if (rec && match(*rec)) {
      freed += accounted(v.mv_size);
      check(mdb_cursor_del(c.get(), 0), "erase journal entry");
      ++removed;
    }
    rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    check(rc, "walk journal");
  if (removed == 0)
    return 0;
  c.close();
  commit_removal(t, removed, freed);
  return removed;
}

void journal::commit_removal(txn& t, std::uint64_t removed, std::uint64_t freed) {
  auto& in = env_.internals();
  std::uint64_t count = count_, bytes = bytes_;
  count -= std::min(count, removed);
  bytes -= std::min(bytes, freed);
  put_u64(t.get(), in.meta, key_count, count);
  put_u64(t.get(), in.meta, key_bytes, bytes);
  t.commit();
  count_ = count;
  bytes_ = bytes;
}

std::uint64_t journal::progress(const std::string& lock) const {
  auto it = progress_.find(lock);
  return it == progress_.end() ? 0 : it->second;
}

protocol::journal_figures journal::figures() const {
  protocol::journal_figures f;
  f.depth = count_;
  f.bytes = bytes_;
  f.limit_bytes = limits_.max_bytes;
  auto first = read(0, 1);
  if (!first.empty())
    f.oldest_received_at = first.front().record.received_at;
  return f;
}

} // namespace lockbridge::store
