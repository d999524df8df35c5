#include "transports/mqtt_link.hpp"

#include <atomic>
#include <future>
#include <mutex>
#include <utility>
#include <vector>

#include <mqtt/async_client.h>
#include <spdlog/spdlog.h>

#include "transports/contain.hpp"
#include "transports/paho_tls.hpp"
#include "transports/tls_probe.hpp"

namespace lockbridge::transport {

namespace {

/// Paho wants tcp/ssl schemes; the configuration may say mqtts:// as well.
std::string paho_uri(std::string uri) {
  if (uri.starts_with("mqtts://"))
    uri = "ssl://" + uri.substr(8);
  return uri;
}

void* as_context(std::uint64_t number) {
  return reinterpret_cast<void*>(static_cast<std::uintptr_t>(number));
}

std::uint64_t number_of(const mqtt::token& tok) {
  return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(tok.get_user_context()));
}

/// Calls a listener's report inside `contain` (Paho's threads must never
/// see an exception).
template <class F>
void report(const char* where, F&& f) noexcept {
  contain(where, std::forward<F>(f), [] {});
}

/// A Paho listener that runs a function on success and another on failure.
struct listener : mqtt::iaction_listener {
  std::function<void(const mqtt::token&)> success;
  std::function<void(const mqtt::token&)> failure;
  void on_success(const mqtt::token& tok) override {
    if (success)
      report("mqtt link: Paho's action callback", [&] { success(tok); });
  }
  void on_failure(const mqtt::token& tok) override {
    if (failure)
      report("mqtt link: Paho's action callback", [&] { failure(tok); });
  }
};

class paho_link final : public mqtt_link, public mqtt::callback {
public:
  explicit paho_link(mqtt_link_events events) : events_{std::move(events)} {
    on_connect_.success = [this](const mqtt::token&) { events_.connected(connect_generation_); };
    on_connect_.failure = [this](const mqtt::token& tok) {
      auto rc = tok.get_return_code();
      events_.lost(connect_generation_,
                   "connect failed: " + mqtt::exception::error_str(rc) + " (code "
                     + std::to_string(rc) + ", reason "
                     + std::to_string(static_cast<int>(tok.get_reason_code())) + ")");
    };
    on_publish_.success = [this](const mqtt::token& tok) { events_.acked(number_of(tok)); };
    on_publish_.failure = [this](const mqtt::token& tok) {
      events_.nacked(number_of(tok), static_cast<std::int32_t>(tok.get_reason_code()));
    };
    on_subscribe_.success = [this](const mqtt::token&) {
      spdlog::info("uplink: receiving commands on {}", filter_);
    };
    on_subscribe_.failure = [this](const mqtt::token& tok) {
      spdlog::error("uplink: the broker refused the subscription to {} (code {}); commands "
                    "and credential updates cannot arrive; check the broker's ACL",
                    filter_, tok.get_return_code());
    };
    auto left = [this](const mqtt::token&) { events_.left(leave_generation_); };
    on_disconnect_.success = left;
    on_disconnect_.failure = left; // not connected any more either way
  }

  paho_link(const paho_link&) = delete;
  paho_link& operator=(const paho_link&) = delete;

  ~paho_link() override {
    // The client first (no callback runs after it), then every probe.
    client_.reset();
    std::lock_guard guard{probes_mutex_};
    for (auto& p : probes_)
      p.wait();
  }

  void renew(const std::string& uri, bool v5, std::size_t buffered,
             const std::string& client_id) override {
    mqtt::create_options create(v5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1,
                                static_cast<int>(buffered));
    // The old client goes first: its socket is closed and whatever it held
    // is dropped without callbacks.
    client_.reset();
    v5_ = v5;
    client_ = std::make_unique<mqtt::async_client>(paho_uri(uri), client_id, create, nullptr);
    client_->set_callback(*this);
  }

  not_taken connect(std::uint64_t generation, const mqtt_connect_settings& s) override {
    return attempt([&] {
      connect_generation_ = generation;
      lost_generation_ = generation;
      auto ssl = mutual_tls(s.tls.ca.string(), s.tls.cert.string(), s.tls.key.string());
      // Configured in place: Paho's C struct points into the kept options
      // (its TLS error handler reads them long after connect returned).
      auto& opts = options_;
      if (v5_) {
        opts.set_mqtt_version(MQTTVERSION_5);
        opts.set_clean_start(true);
      } else {
        opts.set_mqtt_version(MQTTVERSION_3_1_1);
        opts.set_clean_session(true);
      }
      opts.set_keep_alive_interval(static_cast<int>(s.keepalive_s));
      opts.set_connect_timeout(10);
      opts.set_max_inflight(static_cast<int>(s.max_inflight));
      opts.set_will(mqtt::will_options{s.will_topic, s.will_payload, 1, true});
      opts.set_ssl(ssl);
      client_->connect(options_, nullptr, on_connect_);
    });
  }

  not_taken subscribe(const std::string& filter) override {
    return attempt([&] {
      filter_ = filter;
      client_->subscribe(filter, 1, nullptr, on_subscribe_);
    });
  }

  not_taken publish(mqtt_outgoing m, std::uint64_t number) override {
    return attempt([&] {
      auto msg = mqtt::make_message(std::move(m.topic), std::move(m.payload), 1, m.retained);
      if (m.correlation && v5_) { // (a 3.1.1 link has no properties)
        mqtt::properties props;
        if (!m.correlation->empty())
          props.add(mqtt::property(mqtt::property::CORRELATION_DATA, *m.correlation));
        msg->set_properties(std::move(props));
      }
      if (number == 0)
        client_->publish(msg);
      else
        client_->publish(msg, as_context(number), on_publish_);
    });
  }

  not_taken disconnect(std::uint64_t generation) override {
    return attempt([&] {
      leave_generation_ = generation;
      lost_generation_ = 0; // a loss from now on is the one asked for
      client_->disconnect(0, nullptr, on_disconnect_);
    });
  }

  void probe(std::uint64_t generation, const std::string& uri, const mqtt_tls_files& tls,
             bool decide) override {
    std::lock_guard guard{probes_mutex_};
    std::erase_if(probes_, [](std::future<void>& p) {
      return p.wait_for(std::chrono::seconds{0}) == std::future_status::ready;
    });
    auto run = [probed = events_.probed, generation, uri, tls, decide] {
      std::string why;
      try {
        why = probe_tls(uri, tls.ca, tls.cert, tls.key, 2000);
      } catch (const std::exception& e) {
        why = std::string{"the TLS probe failed: "} + e.what();
      }
      report("mqtt link: the TLS probe's report", [&] { probed(generation, why, decide); });
    };
    try {
      probes_.push_back(std::async(std::launch::async, std::move(run)));
    } catch (const std::exception& e) {
      // No thread for it (the system is out of them): the caller gets the
      // reason at once as the verdict (the broker counts as not answering)
      // and goes on to its next attempt.
      report("mqtt link: the TLS probe's report", [&] {
        events_.probed(generation, std::string{"the TLS probe could not start: "} + e.what(),
                       decide);
      });
    }
  }

  void close(const mqtt_outgoing& goodbye) noexcept override {
    try {
      if (client_ && client_->is_connected()) {
        client_->publish(mqtt::make_message(goodbye.topic, goodbye.payload, 1, goodbye.retained))
          ->wait_for(1000);
        client_->disconnect(1000)->wait_for(2000);
      }
    } catch (const std::exception&) {
    }
  }

  // mqtt::callback, on Paho's threads.
  void message_arrived(mqtt::const_message_ptr msg) override {
    report("mqtt link: Paho's message callback", [&] {
      // MQTT 5 request/response: a client may name where the result goes
      // and what to correlate it with.
      mqtt_incoming in{msg->get_topic(), msg->get_payload_str(), {}, {}};
      const auto& props = msg->get_properties();
      if (props.contains(mqtt::property::RESPONSE_TOPIC))
        in.response_topic = mqtt::get<std::string>(props, mqtt::property::RESPONSE_TOPIC);
      if (props.contains(mqtt::property::CORRELATION_DATA))
        in.correlation = mqtt::get<std::string>(props, mqtt::property::CORRELATION_DATA);
      events_.arrived(std::move(in));
    });
  }

  void connection_lost(const std::string& cause) override {
    report("mqtt link: Paho's connection-lost callback", [&] {
      if (auto generation = lost_generation_.load(); generation != 0)
        events_.lost(generation,
                     "connection lost" + (cause.empty() ? std::string{} : ": " + cause));
    });
  }

private:
  /// Runs a Paho call; what Paho throws becomes the reason it was not taken.
  template <class F>
  not_taken attempt(F&& f) {
    if (!client_)
      return "no client";
    try {
      std::forward<F>(f)();
      return std::nullopt;
    } catch (const mqtt::exception& e) {
      return std::string{e.what()};
    }
  }

  mqtt_link_events events_;
  std::atomic<std::uint64_t> connect_generation_{0};
  std::atomic<std::uint64_t> lost_generation_{0};
  std::atomic<std::uint64_t> leave_generation_{0};
  bool v5_ = true;
  std::string filter_;
  listener on_connect_, on_publish_, on_subscribe_, on_disconnect_;
  std::mutex probes_mutex_;
  std::vector<std::future<void>> probes_;
  /// Kept for the client's lifetime (see connect()).
  mqtt::connect_options options_;
  /// Last, so it is destroyed before what its callbacks use.
  std::unique_ptr<mqtt::async_client> client_;
};

} // namespace

std::shared_ptr<mqtt_link> make_paho_link(mqtt_link_events events) {
  return std::make_shared<paho_link>(std::move(events));
}

} // namespace lockbridge::transport
