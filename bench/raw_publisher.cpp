// lockbridge-raw-publisher: the ceiling lockbridge's uplink is measured
// against. A plain Paho async client publishes N messages at QoS 1 over
// mutual TLS, keeping at most --window unacknowledged, with the same events
// payload (one event per message, same encoder) lockbridge would send.
// Prints a JSON report: messages, seconds from first publish to last
// acknowledgement, messages per second.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <string>

#include <CLI/CLI.hpp>
#include <mqtt/async_client.h>
#include <nlohmann/json.hpp>

#include "protocols/cloud_messages.hpp"
#include "transports/paho_tls.hpp"

namespace {

/// Counts acknowledgements and lets the publishing thread wait for room.
class window {
public:
  explicit window(std::uint64_t size) : size_{size} {}

  void acquire() {
    std::unique_lock lock{mutex_};
    room_.wait(lock, [&] { return outstanding_ < size_; });
    ++outstanding_;
  }

  void release(bool ok) {
    {
      std::lock_guard lock{mutex_};
      --outstanding_;
      ++(ok ? acked_ : failed_);
    }
    room_.notify_all();
  }

  /// Waits until nothing is outstanding; false on timeout.
  bool drain(std::chrono::seconds timeout) {
    std::unique_lock lock{mutex_};
    return room_.wait_for(lock, timeout, [&] { return outstanding_ == 0; });
  }

  std::uint64_t acked() {
    std::lock_guard lock{mutex_};
    return acked_;
  }

  std::uint64_t failed() {
    std::lock_guard lock{mutex_};
    return failed_;
  }

private:
  std::mutex mutex_;
  std::condition_variable room_;
  std::uint64_t size_;
  std::uint64_t outstanding_ = 0;
  std::uint64_t acked_ = 0;
  std::uint64_t failed_ = 0;
};

struct publish_listener : mqtt::iaction_listener {
  window* w = nullptr;
  void on_success(const mqtt::token&) override { w->release(true); }
  void on_failure(const mqtt::token&) override { w->release(false); }
};

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"lockbridge-raw-publisher: plain Paho QoS 1 publisher over mutual TLS (benchmark "
               "ceiling)"};
  std::string broker, ca, cert, key;
  std::string site = "site-1", gateway = "raw", lock = "raw-01";
  std::uint64_t messages = 100000;
  std::uint64_t window_size = 100;
  app.add_option("--broker", broker, "ssl://host:port")->required();
  app.add_option("--ca", ca, "CA certificate")->required();
  app.add_option("--cert", cert, "client certificate")->required();
  app.add_option("--key", key, "client key")->required();
  app.add_option("--messages", messages, "messages to publish")->capture_default_str()
    ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10'000'000}));
  app.add_option("--window", window_size, "unacknowledged publishes at most")->capture_default_str()
    ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{65535}));
  app.add_option("--site", site, "site id in the topic")->capture_default_str();
  app.add_option("--gateway", gateway, "gateway id in the topic")->capture_default_str();
  app.add_option("--lock", lock, "lock id in the events")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  mqtt::async_client client(broker, "lockbridge-raw-publisher",
                            mqtt::create_options(MQTTVERSION_3_1_1,
                                                 static_cast<int>(window_size) * 2 + 20));
  auto ssl = lockbridge::transport::mutual_tls(ca, cert, key);
  mqtt::connect_options opts;
  opts.set_clean_session(true);
  opts.set_keep_alive_interval(30);
  opts.set_max_inflight(static_cast<int>(window_size) + 10);
  opts.set_ssl(ssl);
  try {
    client.connect(opts)->wait();
  } catch (const mqtt::exception& e) {
    std::cerr << "raw-publisher: cannot connect: " << e.what() << "\n";
    return 2;
  }

  lockbridge::protocol::topics topics{site, gateway};
  window w{window_size};
  publish_listener listener;
  listener.w = &w;
  // The same record shape lockbridge journals for a card event.
  lockbridge::protocol::journal_record record;
  record.lock = lock;
  record.type = "access_granted";
  record.door = "door-01";
  record.cred = "p1.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i = 1; i <= messages; ++i) {
    record.seq = i;
    record.ts = record.received_at = std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
    auto payload = lockbridge::protocol::encode_events(site, gateway, {&record, 1});
    w.acquire();
    try {
      client.publish(mqtt::make_message(topics.events(), payload, 1, false), nullptr, listener);
    } catch (const mqtt::exception& e) {
      std::cerr << "raw-publisher: publish failed: " << e.what() << "\n";
      return 1;
    }
  }
  bool drained = w.drain(std::chrono::seconds{60});
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  try {
    client.disconnect()->wait_for(2000);
  } catch (const mqtt::exception&) {
  }
  nlohmann::json report{{"messages", messages},
                        {"acked", w.acked()},
                        {"failed", w.failed()},
                        {"elapsed_s", elapsed},
                        {"messages_per_s", static_cast<double>(w.acked()) / elapsed}};
  std::cout << report.dump() << std::endl;
  return drained && w.failed() == 0 ? 0 : 1;
}
