#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/result.hpp"

namespace date {
class time_zone;
}

/// Credentials: who may open which door, when. The model, its stored form
/// (CBOR), the cloud's sync messages (JSON), the lock's access query (CBOR)
/// and the decision itself.
namespace lockbridge::protocol {

/// A weekly window in the site's local time: on the marked days, from
/// `from_minute` (inclusive) to `to_minute` (exclusive) after local midnight.
struct weekly_window {
  std::uint8_t days = 0;         ///< bit 0 = Monday ... bit 6 = Sunday
  std::uint16_t from_minute = 0; ///< 0..1439
  std::uint16_t to_minute = 0;   ///< from_minute+1..1440 (1440 = midnight at the end)

  friend bool operator==(const weekly_window&, const weekly_window&) = default;
};

/// A validity bound, either an instant or a local date-time in the site's
/// zone ("ends at midnight local time" stays right across DST changes).
struct time_bound {
  bool local = false;
  std::int64_t value = 0; ///< Unix ms; or, if local, seconds since 1970-01-01T00:00 local

  friend bool operator==(const time_bound&, const time_bound&) = default;
};

/// A credential as stored: no raw identifier (the store's key is a keyed
/// HMAC of it) and no personal data (the subject is an opaque id).
struct credential {
  std::string subject;                    ///< opaque id from the cloud
  std::vector<std::string> doors;         ///< door ids; "*" opens every door of the site
  std::optional<time_bound> valid_from;   ///< inclusive
  std::optional<time_bound> valid_until;  ///< exclusive
  std::vector<weekly_window> schedule;    ///< empty: at any time
  bool revoked = false;
  std::uint64_t version = 0;              ///< the sync that wrote it

  friend bool operator==(const credential&, const credential&) = default;
};

/// Limits of the sync messages; beyond them a message is refused whole.
struct credential_limits {
  static constexpr std::size_t max_cred_length = 128;
  static constexpr std::size_t max_subject_length = 64;
  static constexpr std::size_t max_doors = 256;
  static constexpr std::size_t max_windows = 32;
  static constexpr std::size_t max_per_chunk = 10000;
  static constexpr std::uint32_t max_chunks = 1000;
  static constexpr std::size_t max_message_bytes = 8 * 1024 * 1024;
  static constexpr std::size_t max_access_request_bytes = 1024; ///< a lock's access query
};

/// Stored value of a credential (compact CBOR).
std::vector<std::uint8_t> encode_credential(const credential& c);
result<credential> decode_credential(std::span<const std::uint8_t> bytes);

/// A credential as the cloud sends it: the raw identifier is still there.
/// It lives only in memory until the store turns `cred` into a lookup key.
struct credential_update {
  std::string cred;
  credential value;
};

/// One chunk of a full snapshot (`cmd/credentials/snapshot`).
struct snapshot_chunk {
  std::string id;          ///< command id, echoed in cmd_result
  std::string snapshot;    ///< the snapshot's id: every chunk of it carries the same
  std::uint64_t version = 0;
  std::uint32_t chunk = 0; ///< 1..chunks
  std::uint32_t chunks = 0;
  std::vector<credential_update> credentials;
};

/// A delta (`cmd/credentials/delta`) from `base_version` to `version`.
struct credential_delta {
  std::string id;
  std::uint64_t base_version = 0;
  std::uint64_t version = 0;
  std::vector<std::string> revoke;  ///< raw identifiers; applied first
  std::vector<std::string> remove;  ///< raw identifiers ("delete" in JSON)
  std::vector<credential_update> upsert;
};

/// `cmd/erase_subject`: remove every local trace of a subject.
struct erase_subject_request {
  std::string id;
  std::string subject;
};

/// `cmd/rotate_keys`: start a new pseudonym epoch and/or a new data key now.
struct rotate_keys_request {
  std::string id;
  bool pseudonym_epoch = false;
  bool data_key = false;
};

result<erase_subject_request> decode_erase_subject(std::string_view json);
result<rotate_keys_request> decode_rotate_keys(std::string_view json);

/// The command id of a cloud message, if it has a usable one (so that even a
/// refused message can be answered under its id).
std::optional<std::string> command_id_of(std::string_view json);

result<snapshot_chunk> decode_snapshot_chunk(std::string_view json);
result<credential_delta> decode_credential_delta(std::string_view json);

/// What a lock asks (`POST /v1/access`).
struct access_request {
  std::string cred;
  std::string door;
  std::int64_t ts = 0; ///< the lock's clock, Unix ms (informational)
};

result<access_request> decode_access_request(std::span<const std::uint8_t> payload);

enum class access_reason {
  allowed,
  unknown_credential,
  revoked,
  expired,
  not_yet_valid,
  outside_schedule,
  wrong_door,
  stale_store,
};

std::string_view to_string(access_reason reason) noexcept;

struct access_decision {
  bool allow = false;
  access_reason reason = access_reason::unknown_credential;
  std::optional<std::int64_t> until; ///< Unix ms the permission lasts to, when allowed

  friend bool operator==(const access_decision&, const access_decision&) = default;
};

/// The answer to the lock: `{allow, reason, until?}`.
std::vector<std::uint8_t> encode_access_answer(const access_decision& d);

/// Decides from a credential (nullptr: unknown) for `door` at `now_ms`, with
/// schedules and local bounds evaluated in `zone`.
access_decision decide(const credential* c, std::string_view door, std::int64_t now_ms,
                       const date::time_zone& zone);

/// Parses "HH:MM" (00:00 to 24:00) into minutes after midnight.
std::optional<std::uint16_t> parse_clock(std::string_view text);

/// Parses a local date-time "YYYY-MM-DDTHH:MM[:SS]" into seconds since
/// 1970-01-01T00:00 on the same (local) clock.
std::optional<std::int64_t> parse_local_datetime(std::string_view text);

/// A result on `cmd_result`.
struct command_result {
  std::string id;
  std::string command;          ///< e.g. "credentials/delta"
  std::string status;           ///< "ok", "pending" (a chunk kept), "error"
  std::optional<std::uint64_t> version; ///< the credential version now in force
  std::optional<input_error> error;
  std::string detail;
  bool snapshot_requested = false;
  std::int64_t ts = 0;
  std::optional<std::string> receipt; ///< a JSON object (erase_subject's receipt)
};

std::string encode_command_result(std::string_view site, std::string_view gateway,
                                  const command_result& r);

} // namespace lockbridge::protocol
