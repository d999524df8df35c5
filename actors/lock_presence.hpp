#pragma once
// Which locks the cloud is told are available, and each lock's own state
// as it last notified it: the retained lock-state messages the uplink
// publishes. A lock is available while it was heard within lock_silence; a
// change is published when it happens, every lock after each connection, a
// lock's own state at once unless its last message is less than a second
// old (then the uplink's next tick sends the latest; door events are in the
// events stream already), and a lock no longer configured has its retained
// message cleared. No CAF, no MQTT: the uplink publishes what this
// says and tells it what went out; unit-tested alone
// (tests/actors/lock_presence_test.cpp).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "protocols/lock_commands.hpp"

namespace lockbridge {

class lock_presence {
public:
  /// The configured locks and when each was last heard (Unix ms, 0: never).
  using seen_list = std::vector<std::pair<std::string, std::int64_t>>;

  /// One retained lock-state message to publish.
  struct publication {
    std::string lock;
    bool available = false;
    std::int64_t last_seen = 0;
    /// What the lock last said of itself, if it said anything.
    std::optional<protocol::lock_state> state;
    /// The lock is no longer configured: its retained message is deleted.
    bool clear = false;
  };

  static constexpr std::int64_t state_interval_ms = 1000;

  explicit lock_presence(std::chrono::milliseconds silence = std::chrono::minutes{5})
    : silence_ms_{silence.count()} {}

  void set_silence(std::chrono::milliseconds silence) { silence_ms_ = silence.count(); }

  /// Compares the locks' last words with what was published: the locks
  /// whose availability changed (every lock with `all`, after connecting),
  /// and the clearing of locks no longer configured (until one is sent).
  /// Logs each change.
  std::vector<publication> survey(const seen_list& seen, std::int64_t now, bool all);

  /// A lock notified its own state (it just spoke: it is available). Returns
  /// what to publish now, or nothing when the state is unchanged or one was
  /// published less than a second ago (then waiting() has it).
  std::optional<publication> observed(const std::string& lock, const protocol::lock_state& state,
                                      std::int64_t last_seen, std::int64_t now);

  /// The states held back by observed(), the latest of each lock: the
  /// uplink's 2 s tick publishes them (the tick's interval is the bound).
  [[nodiscard]] std::vector<publication> waiting(const seen_list& seen) const;

  /// What the uplink published (a clear or a state) at `now`.
  void sent(const publication& p, std::int64_t now);

  [[nodiscard]] std::size_t available_count() const;
  [[nodiscard]] bool has_waiting() const { return !waiting_.empty(); }

private:
  [[nodiscard]] publication make(const std::string& lock, bool available,
                                 std::int64_t last_seen) const;

  std::int64_t silence_ms_;
  std::map<std::string, bool> available_; ///< as last surveyed or observed
  std::map<std::string, protocol::lock_state> states_; ///< as the locks last notified
  std::map<std::string, std::int64_t> published_at_;   ///< a lock's last state message
  std::set<std::string> waiting_;  ///< states held back by the one-second bound
  std::set<std::string> clearing_; ///< removed locks whose clear is not sent yet
};

} // namespace lockbridge
