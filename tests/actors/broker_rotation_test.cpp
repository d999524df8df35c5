#include "actors/broker_rotation.hpp"

#include <doctest/doctest.h>

using lockbridge::broker_rotation;
using lockbridge::config::mqtt_protocol;

TEST_SUITE("actors") {

TEST_CASE("broker_rotation: one broker, one version: every attempt the same") {
  broker_rotation r{{"ssl://a:8883"}, mqtt_protocol::v3_1_1};
  CHECK(r.current().uri == "ssl://a:8883");
  CHECK_FALSE(r.current().v5);
  CHECK_FALSE(r.may_fall_back());
  CHECK_FALSE(r.connect_failed(true));
  CHECK_FALSE(r.connection_lost());
  CHECK(r.current().uri == "ssl://a:8883");
  CHECK(r.failovers() == 0);
}

TEST_CASE("broker_rotation: a cluster's nodes in turn on refusal and on loss") {
  broker_rotation r{{"ssl://a:1", "ssl://b:2", "ssl://c:3"}, mqtt_protocol::v5};
  CHECK(r.current().index == 0);
  CHECK(r.connect_failed(true)); // 5 only: no fallback, the next node
  CHECK(r.current().uri == "ssl://b:2");
  CHECK(r.current().v5);
  r.connected();
  CHECK(r.connection_lost()); // b went away: c, then a again
  CHECK(r.current().uri == "ssl://c:3");
  CHECK(r.connect_failed(false));
  CHECK(r.current().uri == "ssl://a:1");
  CHECK(r.failovers() == 3);
}

TEST_CASE("broker_rotation: auto tries 3.1.1 only with a broker that answers, and remembers") {
  broker_rotation r{{"ssl://rabbit:8883", "ssl://other:8883"}, mqtt_protocol::automatic};
  CHECK(r.current().v5);
  CHECK(r.may_fall_back());
  // Down altogether: no point in another version; the next broker.
  CHECK(r.connect_failed(false));
  CHECK(r.current().uri == "ssl://other:8883");
  CHECK(r.connect_failed(false));
  // It answers but drops MQTT 5: 3.1.1 on the same broker, which works.
  CHECK(r.current().uri == "ssl://rabbit:8883");
  CHECK_FALSE(r.connect_failed(true));
  CHECK(r.current().uri == "ssl://rabbit:8883");
  CHECK_FALSE(r.current().v5);
  r.connected();
  // Lost and back: 3.1.1 at once with this broker, 5 still first elsewhere.
  r.connection_lost();
  CHECK(r.current().uri == "ssl://other:8883");
  CHECK(r.current().v5);
  r.connection_lost();
  CHECK(r.current().uri == "ssl://rabbit:8883");
  CHECK_FALSE(r.current().v5);
  CHECK_FALSE(r.may_fall_back());
}

TEST_CASE("broker_rotation: auto never gives up 5 with a broker where 5 worked") {
  broker_rotation r{{"ssl://a:1"}, mqtt_protocol::automatic};
  r.connected();
  r.connection_lost();
  CHECK(r.current().v5);
  CHECK_FALSE(r.may_fall_back());
  r.connect_failed(true); // a refusal now is not about the version
  CHECK(r.current().v5);
}

TEST_CASE("broker_rotation: no broker is a programming error") {
  CHECK_THROWS_AS(broker_rotation({}, mqtt_protocol::v5), std::invalid_argument);
}

}
