#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

/// The gateway's link to the MQTT broker, as the uplink sees it: connect,
/// publish with a number that comes back acknowledged or refused, subscribe,
/// leave, and probe a broker that will not take a connection. The uplink
/// keeps every window, retry and backoff; the link keeps none of that. One
/// implementation drives Paho (make_paho_link); the uplink's unit tests use
/// one of their own that records what was asked and answers on command.
namespace lockbridge::transport {

/// A message from a subscribed topic, with the MQTT 5 request/response
/// properties (empty when absent).
struct mqtt_incoming {
  std::string topic;
  std::string payload;
  std::string response_topic;
  std::string correlation;
};

/// What a link reports. Called on the client library's threads, each call
/// inside `contain`; an implementation of these only forwards (the uplink
/// sends itself a message) and never touches the uplink's state.
struct mqtt_link_events {
  /// The connect of this generation succeeded.
  std::function<void(std::uint64_t generation)> connected;
  /// The connect of this generation failed, or its connection was lost
  /// (never after a disconnect this side asked for).
  std::function<void(std::uint64_t generation, std::string reason)> lost;
  /// The broker acknowledged the publish with this number.
  std::function<void(std::uint64_t number)> acked;
  /// The publish with this number failed: the MQTT 5 reason code, 0x80 or
  /// above when the broker refused it, 0 when none was given.
  std::function<void(std::uint64_t number, std::int32_t reason)> nacked;
  /// The disconnect asked for with this generation is done (the broker got
  /// the DISCONNECT or the socket is closed).
  std::function<void(std::uint64_t generation)> left;
  /// A message arrived on a subscribed topic.
  std::function<void(mqtt_incoming)> arrived;
  /// A probe ended (generation, what it found: empty when the broker took a
  /// TCP and TLS connection with these files, and the caller's `decide`).
  std::function<void(std::uint64_t generation, std::string why, bool decide)> probed;
};

/// The TLS files of mutual TLS with the broker.
struct mqtt_tls_files {
  std::filesystem::path ca;
  std::filesystem::path cert;
  std::filesystem::path key;
};

/// How to connect: the broker and the version the client was made for come
/// from renew(); these are the session's settings.
struct mqtt_connect_settings {
  mqtt_tls_files tls;
  std::uint32_t keepalive_s = 30;
  std::size_t max_inflight = 10;
  /// The retained message the broker publishes if the link dies.
  std::string will_topic;
  std::string will_payload;
};

/// A QoS 1 message to publish.
struct mqtt_outgoing {
  std::string topic;
  std::string payload;
  bool retained = false;
  /// MQTT 5 correlation data (sent only on an MQTT 5 link, when set).
  std::optional<std::string> correlation;
};

/// Why the link did not take an operation now (the library's words); empty
/// optional: taken. An operation not taken is tried again later by the
/// caller; nothing is reported for it.
using not_taken = std::optional<std::string>;

class mqtt_link {
public:
  virtual ~mqtt_link() = default;

  /// Makes a new client for `uri` (mqtts://, ssl://) and MQTT 5 or 3.1.1,
  /// able to hold `buffered` messages. The client before it is dropped
  /// with whatever it held, its socket closed, without further reports.
  virtual void renew(const std::string& uri, bool v5, std::size_t buffered,
                     const std::string& client_id) = 0;

  /// Starts a connect; its outcome is reported as connected or lost with
  /// `generation`, as is a later loss of the connection.
  [[nodiscard]] virtual not_taken connect(std::uint64_t generation,
                                          const mqtt_connect_settings& settings) = 0;

  /// Subscribes at QoS 1; a refusal is logged (commands cannot arrive).
  [[nodiscard]] virtual not_taken subscribe(const std::string& filter) = 0;

  /// Hands a message to the client (moved in: an events batch is not
  /// copied). `number` comes back as acked or nacked; 0 asks for no report.
  [[nodiscard]] virtual not_taken publish(mqtt_outgoing message, std::uint64_t number) = 0;

  /// Starts leaving the connection; `left` reports `generation` when done.
  [[nodiscard]] virtual not_taken disconnect(std::uint64_t generation) = 0;

  /// Finds out, on a thread of its own, why `uri` refuses a connection
  /// with `tls` (a TCP and TLS handshake, bounded to about 4 s); reports
  /// `probed`. The caller waits for nothing.
  virtual void probe(std::uint64_t generation, const std::string& uri,
                     const mqtt_tls_files& tls, bool decide) = 0;

  /// The last words on a clean stop: publishes `goodbye` and disconnects,
  /// waiting up to about 3 s in all. Called when the uplink ends, never
  /// from one of its handlers.
  virtual void close(const mqtt_outgoing& goodbye) noexcept = 0;
};

/// Makes a link's reports: what `make_paho_link` or a test's link calls.
using mqtt_link_factory = std::function<std::shared_ptr<mqtt_link>(mqtt_link_events)>;

/// The link over Paho MQTT C++ (mutual TLS; the probe is probe_tls).
std::shared_ptr<mqtt_link> make_paho_link(mqtt_link_events events);

} // namespace lockbridge::transport
