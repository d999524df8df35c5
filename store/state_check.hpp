#pragma once
// Checks of the state directory that run before LMDB maps the file, and the
// offline tools built on them (`lockbridge state check`, `state salvage`).
// A damaged file must be refused with a message, never crashed on: LMDB maps
// the file and trusts its pages, so a truncated or overwritten file gives
// SIGBUS, SIGSEGV or an assertion inside LMDB. The checks here read the meta
// pages with plain reads, and walk every table in a child process whose death
// by a signal is an answer, not a crash of the gateway.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "store/environment.hpp"

namespace lockbridge::store {

/// Who the state belongs to, recorded in the state directory's `identity`
/// file and in the LMDB file's meta table: an emptied or missing data file
/// where state existed is refused rather than started empty, and a state
/// directory of another gateway is refused rather than adopted.
struct state_identity {
  std::string site;
  std::string gateway;
  std::string state_id;      ///< 16 random bytes in hex, made when the state was created
  std::int64_t created_at = 0; ///< Unix ms

  [[nodiscard]] std::string to_text() const;
  /// Parses the text written by to_text; nothing if it is not that.
  static std::optional<state_identity> from_text(std::string_view text);
  bool operator==(const state_identity&) const = default;
};

/// The identity file of `dir`, if there is one. Throws store_error (damaged)
/// if it exists and cannot be read or parsed.
std::optional<state_identity> read_identity_file(const std::filesystem::path& dir);

/// Writes the identity file atomically (temporary file, fsync, rename).
/// Throws store_error (unusable) if it cannot.
void write_identity_file(const std::filesystem::path& dir, const state_identity& id);

/// A new identity for `site`/`gateway`, with a random state id.
state_identity new_identity(const std::string& site, const std::string& gateway,
                            std::int64_t now_ms);

/// Checks `data.mdb` in `dir` against LMDB's two meta pages without mapping
/// it: magic, format version, page size, roots and last page within the
/// file. Returns the problem, said for an installer, or nothing if the file
/// passes (or does not exist).
std::optional<std::string> check_meta_pages(const std::filesystem::path& dir);

/// Walks every record of every table (and LMDB's free list) in a child
/// process, reading every byte, within `limit`; with `write_probe` (the
/// daemon's start, which holds the state's lock) it then takes the write
/// path as the daemon's first transaction does, and aborts it. Returns the
/// problem (LMDB's error, or the signal the walk died of, or that it did
/// not end in time), or nothing if the walk completed. Call before the
/// process maps the file.
std::optional<std::string> walk_in_child(const std::filesystem::path& dir,
                                         std::chrono::seconds limit, bool write_probe = false);

/// The checks a start runs before opening the state (in this order): the
/// directory is usable; the identity file and the data file agree (state
/// recorded but data.mdb missing or empty is refused unless `start_empty`);
/// the meta pages; the walk. Throws store_error: damaged or unusable.
void preflight_state(const std::filesystem::path& dir, bool start_empty);

class environment;

/// After the environment opened: compares the identity inside the LMDB file,
/// the identity file and the configured site/gateway; records the identity
/// where it is missing. Throws store_error (foreign) on a mismatch.
/// Returns true if a new identity was made (a new or deliberately emptied state).
bool bind_identity(environment& env, const std::string& site, const std::string& gateway,
                   bool start_empty, std::int64_t now_ms);

/// What `lockbridge state check` found in one table.
struct table_report {
  std::string table;
  std::uint64_t records = 0;
  std::uint64_t unreadable = 0; ///< sealed values that do not open (or entries that do not parse)
};

/// The whole report of `lockbridge state check`.
struct check_report {
  std::optional<std::string> structure; ///< the structural problem, if any
  std::vector<table_report> tables;
  [[nodiscard]] bool ok() const;
};

class keyring;

/// Opens every sealed value of every sealed table with `keys` and counts the
/// records of the others. Throws store_error if LMDB cannot walk a table.
std::vector<table_report> check_values(environment& env, const keyring& keys);

/// What `lockbridge state salvage` did.
struct salvage_report {
  std::vector<table_report> copied; ///< records copied (readable), per table
  std::vector<table_report> lost;   ///< records that could not be read, per table (estimates where the structure is damaged)
  std::vector<std::string> notes;   ///< where a table's walk failed
};

/// Copies every record LMDB can still reach from the state in `from` into a
/// new environment in `to` (which must not hold a data file), table by
/// table, in child processes (a walk that dies on a damaged page loses only
/// what lies beyond it; a second walk from the end picks up the rest). The
/// journal's figures are recounted; the identity is carried over.
salvage_report salvage_raw(const std::filesystem::path& from, const std::filesystem::path& to);

} // namespace lockbridge::store
