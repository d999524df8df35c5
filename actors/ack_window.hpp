#pragma once
// The publishes one ordered source has in flight (the journal's events, the
// audit trail, the outbox of command results): what the broker acknowledged,
// what the source may drop, and where reading resumes after a lost link or a
// refusal. No CAF, no Paho: the uplink owns one per source and unit tests
// drive it alone (tests/actors/ack_window_test.cpp).
//
// Positions are the source's keys (journal keys, audit seqs, outbox
// numbers), rising; a publish carries positions first..last. Publish
// numbers are the link's own (the PUBACK names them). Acknowledgements come
// in any order; the source may drop a position once every publish up to it
// is acknowledged (the acknowledged prefix), so a lost link never loses
// what is in flight: reading resumes after that prefix.

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>

namespace lockbridge {

class ack_window {
public:
  using time_point = std::chrono::steady_clock::time_point;

  struct flight {
    std::uint64_t number = 0; ///< the link's publish number
    std::uint64_t first = 0;  ///< the first position it carries
    std::uint64_t last = 0;   ///< the last position it carries
    std::uint64_t items = 0;  ///< what it carries (events, records, results)
    time_point sent_at{};
    bool acked = false;
  };

  /// What the acknowledged prefix released: positions up to `upto` (0:
  /// nothing new) carrying `items`.
  struct released {
    std::uint64_t upto = 0;
    std::uint64_t items = 0;
  };

  explicit ack_window(std::size_t capacity) : capacity_{capacity} {}

  [[nodiscard]] std::size_t size() const noexcept { return flights_.size(); }
  [[nodiscard]] bool empty() const noexcept { return flights_.empty(); }
  [[nodiscard]] std::size_t room() const noexcept {
    return flights_.size() >= capacity_ ? 0 : capacity_ - flights_.size();
  }

  /// The next position to read from the source.
  [[nodiscard]] std::uint64_t next() const noexcept { return next_; }
  /// Every position up to this one is acknowledged (0: none yet).
  [[nodiscard]] std::uint64_t acked_upto() const noexcept { return acked_upto_; }

  /// Records a publish; reading goes on after `last`.
  void sent(const flight& f);

  /// Reading skips positions up to `position` (entries the source could not
  /// open and moved aside).
  void skip_to(std::uint64_t position) noexcept;

  /// A PUBACK: marks the publish acknowledged and returns it, or nothing if
  /// it is not in this window (another source's, or from before a rewind).
  std::optional<flight> ack(std::uint64_t number);

  /// Pops the acknowledged prefix.
  released release();

  /// Whether `number` is in flight here.
  [[nodiscard]] bool holds(std::uint64_t number) const;

  /// Whether a publish in flight carries `position` (not to send it twice).
  [[nodiscard]] bool carries(std::uint64_t position) const;

  /// Drops one publish the broker did not take; its positions are read
  /// again (the others stay in flight).
  std::optional<flight> drop(std::uint64_t number);

  /// Forgets every publish in flight (a lost link, a refusal): reading
  /// starts again after the acknowledged prefix (at the source's beginning
  /// while nothing is acknowledged). Late PUBACKs of the
  /// forgotten publishes are not this window's any more.
  void rewind() noexcept;

  /// When the oldest unacknowledged publish left, if one is in flight.
  [[nodiscard]] std::optional<time_point> oldest_unacked() const;

private:
  std::size_t capacity_;
  std::deque<flight> flights_;
  std::uint64_t next_ = 0;
  std::uint64_t acked_upto_ = 0;
};

} // namespace lockbridge
