#pragma once

// Which broker the uplink tries next, and with which MQTT version: the
// brokers in order of preference (`mqtt.brokers`), moving to the next on a
// refusal or a lost link, and with `mqtt.protocol = "auto"` MQTT 5 first,
// 3.1.1 with a broker that answers but does not take 5. Kept free of CAF and
// Paho (unit-tested on its own).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace lockbridge {

class broker_rotation {
public:
  /// `brokers` must not be empty.
  broker_rotation(std::vector<std::string> brokers, config::mqtt_protocol protocol);

  struct attempt {
    std::size_t index = 0;
    std::string uri;
    bool v5 = true; ///< MQTT 5, else 3.1.1
  };
  [[nodiscard]] attempt current() const;

  /// Whether a failed connect to the current broker should be followed by
  /// 3.1.1 on the same broker if it answers (auto, 5 tried, 5 never seen
  /// to work there): the caller then finds out whether it answers.
  [[nodiscard]] bool may_fall_back() const;

  /// The attempt failed. `answers`: the broker took a TCP and TLS connection
  /// (so it refused or dropped the MQTT CONNECT itself). Returns true if the
  /// next attempt goes to another broker.
  bool connect_failed(bool answers);
  /// An established link was lost: the next attempt goes to the next broker
  /// (a cluster's other node), if there is one. Returns true if it does.
  bool connection_lost();
  /// The attempt succeeded: its version is remembered for this broker.
  void connected();

  /// Moves to another broker since start.
  [[nodiscard]] std::uint64_t failovers() const noexcept { return failovers_; }
  [[nodiscard]] std::size_t size() const noexcept { return brokers_.size(); }

private:
  enum class seen : std::uint8_t { nothing, v5, v3_1_1 };
  void move_on();
  [[nodiscard]] bool first_try_v5(std::size_t index) const;

  std::vector<std::string> brokers_;
  config::mqtt_protocol protocol_;
  std::vector<seen> worked_;
  std::size_t index_ = 0;
  bool v5_ = true;
  std::uint64_t failovers_ = 0;
};

} // namespace lockbridge
