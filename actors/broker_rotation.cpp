#include "actors/broker_rotation.hpp"

#include <stdexcept>

namespace lockbridge {

broker_rotation::broker_rotation(std::vector<std::string> brokers, config::mqtt_protocol protocol)
  : brokers_(std::move(brokers)), protocol_(protocol), worked_(brokers_.size(), seen::nothing) {
  if (brokers_.empty())
    throw std::invalid_argument{"broker_rotation: no broker"};
  v5_ = first_try_v5(0);
}

bool broker_rotation::first_try_v5(std::size_t index) const {
  switch (protocol_) {
  case config::mqtt_protocol::v5: return true;
  case config::mqtt_protocol::v3_1_1: return false;
  case config::mqtt_protocol::automatic: return worked_[index] != seen::v3_1_1;
  }
  return true;
}

broker_rotation::attempt broker_rotation::current() const {
  return {index_, brokers_[index_], v5_};
}

bool broker_rotation::may_fall_back() const {
  return protocol_ == config::mqtt_protocol::automatic && v5_ && worked_[index_] != seen::v5;
}

bool broker_rotation::connect_failed(bool answers) {
  if (answers && may_fall_back()) {
    v5_ = false; // the same broker, in 3.1.1
    return false;
  }
  move_on();
  return brokers_.size() > 1;
}

bool broker_rotation::connection_lost() {
  move_on();
  return brokers_.size() > 1;
}

void broker_rotation::connected() {
  worked_[index_] = v5_ ? seen::v5 : seen::v3_1_1;
}

void broker_rotation::move_on() {
  if (brokers_.size() > 1) {
    index_ = (index_ + 1) % brokers_.size();
    ++failovers_;
  }
  v5_ = first_try_v5(index_);
}

} // namespace lockbridge
