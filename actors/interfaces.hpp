#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include "protocols/cloud_messages.hpp"
#include "protocols/credentials.hpp"
#include "protocols/lock_messages.hpp"
#include "actors/results.hpp"
#include "store/journal.hpp"
#include "transports/lock_transport.hpp"

CAF_ADD_ATOM(lockbridge, lockbridge::atom, append, "append")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, flush, "flush")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, remove, "remove")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, purge, "purge")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, committed, "committed")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, events, "events")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, figures, "figures")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, connect, "connect")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, connected, "connected")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, lost, "lost")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, acked, "acked")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, nacked, "nacked")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, status, "status")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, command, "command")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, result, "result")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, tick, "tick")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, reload, "reload")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, get, "get")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, restart, "restart")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, reseal, "reseal")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, audit, "audit")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, observed, "observed")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, retry, "retry")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, probed, "probed")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, beat, "beat")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, left, "left")
CAF_ADD_ATOM(lockbridge, lockbridge::atom, quarantine, "quarantine")

namespace lockbridge {

/// A pseudonymised batch ready for the journal.
/// Owned by the journal once sent: it moves the records out rather than
/// copying them (the sender keeps no reference).
using append_ptr = std::shared_ptr<store::append_request>;

/// Keys of a table (journal keys, outbox numbers), as one message carries them.
using keys_ptr = std::shared_ptr<const std::vector<std::uint64_t>>;

/// Counters of the journal actor since start, plus the store's figures.
using journal_figures = protocol::journal_figures;

/// The journal: the single writer of the events table, and the one that
/// removes what the broker acknowledged (events, audit records, results), so
/// no fsync'd write runs on CAF's shared worker.
using journal_actor = caf::typed_actor<
  /// Append a lock's batch; the answer goes to the lock through the reply
  /// sink once the group commit holding it is durable.
  caf::reacts_to<atom::append, std::uint64_t, append_ptr>,
  /// The broker acknowledged everything up to this key: remove it.
  caf::reacts_to<atom::remove, std::uint64_t>,
  /// The broker acknowledged the audit records up to this seq: remove them.
  caf::reacts_to<atom::remove, atom::audit, std::uint64_t>,
  /// The broker acknowledged the result with this outbox number: remove it.
  caf::reacts_to<atom::remove, atom::result, std::uint64_t>,
  /// Journal entries (keys) that do not open: move them to the quarantine
  /// table, count them, audit it (the uplink found them while reading).
  caf::reacts_to<atom::quarantine, atom::events, keys_ptr>,
  /// Likewise for results in the outbox (outbox numbers).
  caf::reacts_to<atom::quarantine, atom::result, keys_ptr>,
  /// Append an audit record (action, detail as a JSON object's text) for an
  /// actor that must not write on CAF's shared worker (the uplink).
  caf::reacts_to<atom::audit, std::string, std::string>,
  /// Commit what has gathered (sent to itself: group commit).
  caf::reacts_to<atom::flush>,
  /// Apply retention now (also runs on its own timer).
  caf::reacts_to<atom::purge>,
  /// Try again the removals a failing disk refused (its own timer).
  caf::reacts_to<atom::retry>,
  /// Report depth, bytes and counters.
  caf::replies_to<atom::figures>::with<journal_figures>,
  /// Answered once entries at this key or later are durable, with the key
  /// after the last one (at once if there are already). The journal knows
  /// no reader: whoever publishes its entries keeps one such request open.
  caf::replies_to<atom::committed, std::uint64_t>::with<std::uint64_t>>;

/// The credential set's owner: applies the cloud's sync commands.
using credentials_actor = caf::typed_actor<
  /// A command from the cloud: its name under cmd/ and its JSON payload.
  caf::reacts_to<atom::command, std::string, std::string>,
  /// Periodic: save the clock's high-water mark, drop an abandoned snapshot.
  caf::reacts_to<atom::tick>>;

/// The keeper of data protection: pseudonym epochs, data keys, erasure,
/// retention of the audit trail and the quarantine.
using keeper_actor = caf::typed_actor<
  /// A command (erase_subject, rotate_keys) and its payload, from the cloud
  /// or the local socket: the result JSON (also published on cmd_result).
  caf::replies_to<atom::command, std::string, std::string>::with<std::string>,
  /// Periodic: epoch rotation and destruction, retention (also at start).
  caf::reacts_to<atom::tick>,
  /// One step of re-sealing after a data-key rotation (sent to itself).
  caf::reacts_to<atom::reseal>>;

/// A lock's own state as it notified it (from libcoap's thread).
using lock_state_ptr = std::shared_ptr<const protocol::lock_state>;

/// How a lock command ended at the lock (from libcoap's thread).
struct lock_command_done {
  std::string id;
  transport::command_outcome outcome;
};
using lock_command_done_ptr = std::shared_ptr<const lock_command_done>;

/// Lock commands from the cloud: checked, deduplicated, sent to the lock over
/// its CoAP session, answered on cmd_result, audited.
using commands_actor = caf::typed_actor<
  /// `cmd/lock` and its payload.
  caf::reacts_to<atom::command, std::string, std::string>,
  /// The lock answered, or the command's lifetime ended.
  caf::reacts_to<atom::result, lock_command_done_ptr>>;

} // namespace lockbridge
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::journal_actor)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::command_reply_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::credentials_actor)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::keeper_actor)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::commands_actor)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::lock_command_done_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::lock_state_ptr)
namespace lockbridge {

/// The cloud link.
using uplink_actor = caf::typed_actor<
  /// Try to connect now (also sent to itself after a backoff).
  caf::reacts_to<atom::connect>,
  /// Paho reports: connected (generation).
  caf::reacts_to<atom::connected, std::uint64_t>,
  /// Paho reports: connect failed or connection lost (generation, reason).
  caf::reacts_to<atom::lost, std::uint64_t, std::string>,
  /// A TLS probe of the broker that failed to connect ended, off the
  /// actor's thread (generation, what it found: empty if the broker took a
  /// TCP and TLS connection, whether the attempt's outcome waits for it).
  caf::reacts_to<atom::probed, std::uint64_t, std::string, bool>,
  /// The deadline of that probe's verdict (sent to itself; generation).
  caf::reacts_to<atom::probed, std::uint64_t>,
  /// The link left the connection of this generation (new TLS files), or
  /// (true) the time to wait for that is up (sent to itself).
  caf::reacts_to<atom::left, std::uint64_t, bool>,
  /// Paho reports: PUBACK for the publish with this number.
  caf::reacts_to<atom::acked, std::uint64_t>,
  /// Paho reports: the publish with this number failed (MQTT 5 reason code,
  /// 0x80 or above when the broker refused it; 0 when none was given).
  caf::reacts_to<atom::nacked, std::uint64_t, std::int32_t>,
  /// Publishing may go on after a refusal's backoff (sent to itself).
  caf::reacts_to<atom::retry>,
  /// Tell the journal what the broker has acknowledged (sent to itself: at
  /// most one removal per interval, not one per PUBACK).
  caf::reacts_to<atom::remove>,
  /// Publish the status message now (also on its own timer).
  caf::reacts_to<atom::status>,
  /// Paho reports: a message on a subscribed cmd/ topic (topic, payload, and
  /// the MQTT 5 response topic and correlation data, empty if absent).
  caf::reacts_to<atom::command, std::string, std::string, std::string, std::string>,
  /// A cmd_result to publish (from a command handler, relayed by the
  /// supervisor): kept in the outbox under its number (removed on PUBACK),
  /// or number 0 if it could not be stored (then kept in memory, bounded).
  caf::reacts_to<atom::result, command_reply_ptr>,
  /// A lock's own state changed (observed over CoAP): publish it.
  caf::reacts_to<atom::observed, std::string, lock_state_ptr>,
  /// Publish audit records waiting in the store (also on its own timer).
  caf::reacts_to<atom::audit>,
  /// The local status (JSON): the status message's figures and the link's state.
  caf::replies_to<atom::get>::with<std::string>,
  /// A reload (the number of locks now configured, mqtt.cert_warning_days,
  /// coap.lock_silence_s): if the CA, certificate or key files changed on
  /// disk (same paths), check them and reconnect with them.
  caf::reacts_to<atom::reload, std::uint64_t, std::uint32_t, std::uint32_t>,
  /// Its own timer: the same check of the TLS files, without a reload.
  caf::reacts_to<atom::tick>,
  /// Its own 100 ms heartbeat: how late it runs is how long CAF's worker
  /// was held (status: health.worker_stall_ms).
  caf::reacts_to<atom::beat>>;

/// The owner of libcoap's loop.
using coap_endpoint_actor = caf::typed_actor<
  /// Stop the loop (before the journal goes away).
  caf::reacts_to<atom::restart>>;

} // namespace lockbridge

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::append_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::keys_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(lockbridge::protocol::journal_figures)
