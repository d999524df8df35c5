#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "store/environment.hpp"
#include "store/sealed_table.hpp"
#include "store/sealing.hpp"

namespace lockbridge::store {

/// What the cloud was promised and has not acknowledged: command results,
/// erasure receipts, key-rotation results. Each is sealed in the `outbox`
/// table from the moment it exists until the broker's PUBACK, so a restart
/// while the cloud is away loses none. Numbers rise and are never reused.
/// Thread-safe (LMDB serialises writers).
class outbox final : public sealed_log {
public:
  outbox(std::shared_ptr<environment> env, std::shared_ptr<const keyring> keys);

  /// Appends `payload` (a cmd_result JSON); durable when it returns. Its number.
  std::uint64_t append(std::string_view payload);

  /// Appends the result of lock command `command_id` and marks the command
  /// answered, in one transaction: across any restart, a command gets
  /// exactly one result.
  std::uint64_t append_answer(std::string_view payload, std::string_view command_id);

  /// The broker acknowledged it.
  void remove(std::uint64_t number);

  struct entry {
    std::uint64_t number = 0;
    std::string payload;
  };
  /// Up to `max` entries numbered `from` or later, oldest first. An entry
  /// that does not open is skipped and its number added to `unreadable`
  /// (for quarantine(), sealed_table.hpp).
  std::vector<entry> read(std::uint64_t from, std::size_t max,
                          std::vector<std::uint64_t>* unreadable = nullptr) const;

  /// How many wait.
  [[nodiscard]] std::uint64_t size() const;

private:
  std::uint64_t append_in(void* txn, std::string_view payload);
};

} // namespace lockbridge::store
