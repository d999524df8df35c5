// lockbridge-checker: the cloud side of a test. Subscribes over mutual TLS to
// a gateway's events (and anything else asked for), and reports per lock:
// events received, duplicates (an event_id seen before), gaps (seqs never
// seen up to the highest), order violations (a new seq below one already
// seen). Optionally writes every message it got to a file (one JSON line per
// message: topic and payload) for schema and privacy checks.

#include <chrono>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <mqtt/async_client.h>
#include <nlohmann/json.hpp>

#include "transports/paho_tls.hpp"

namespace {

volatile std::sig_atomic_t stop_requested = 0;

struct lock_tally {
  std::vector<bool> seen; // index = seq
  std::uint64_t received = 0;
  std::uint64_t unique = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t order_violations = 0;
  std::uint64_t highest = 0;
};

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"lockbridge-checker: cloud-side subscriber that checks event delivery"};
  std::string broker, ca, cert, key, capture, ready_file;
  std::vector<std::string> topics{"lockbridge/v1/+/+/events"};
  std::uint64_t expect = 0;
  double timeout_s = 60;
  double idle_exit_s = 0;
  app.add_option("--broker", broker, "ssl://host:port")->required();
  app.add_option("--ca", ca, "CA certificate")->required();
  app.add_option("--cert", cert, "client certificate")->required();
  app.add_option("--key", key, "client key")->required();
  app.add_option("--topic", topics, "topic filters")->capture_default_str();
  app.add_option("--expect", expect, "stop once this many unique events arrived");
  app.add_option("--timeout", timeout_s, "stop after this many seconds")->capture_default_str();
  app.add_option("--idle-exit", idle_exit_s, "stop after this many seconds without messages (0: never)");
  app.add_option("--capture", capture, "write every message (JSON lines) here");
  app.add_option("--ready-file", ready_file, "touch this file once subscribed");
  std::string session;
  app.add_option("--session", session,
                 "persistent session with this client id: reconnects and receives what the "
                 "broker queued meanwhile");
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGINT, [](int) { stop_requested = 1; });
  std::signal(SIGTERM, [](int) { stop_requested = 1; });

  auto client_id = session.empty() ? "lockbridge-checker-" + std::to_string(::getpid()) : session;
  mqtt::async_client client(broker, client_id, mqtt::create_options(MQTTVERSION_3_1_1));
  auto ssl = lockbridge::transport::mutual_tls(ca, cert, key);
  mqtt::connect_options opts;
  opts.set_clean_session(session.empty());
  opts.set_keep_alive_interval(5);
  if (!session.empty())
    opts.set_automatic_reconnect(1, 2);
  opts.set_ssl(ssl);
  client.start_consuming();
  if (!session.empty()) {
    // After an automatic reconnection the broker may have lost the session
    // (a broker killed before it saved it): subscribe again, every time.
    client.set_connected_handler([&client, &topics](const std::string&) {
      try {
        for (const auto& t : topics)
          client.subscribe(t, 1);
      } catch (const std::exception& e) {
        std::cerr << "checker: cannot subscribe again: " << e.what() << "\n";
      } catch (...) {
      }
    });
  }
  try {
    client.connect(opts)->wait();
    for (const auto& t : topics)
      client.subscribe(t, 1)->wait();
  } catch (const mqtt::exception& e) {
    std::cerr << "checker: cannot subscribe: " << e.what() << "\n";
    return 2;
  }
  if (!ready_file.empty())
    std::ofstream{ready_file} << "subscribed\n";
  std::cerr << "checker: subscribed to " << topics.size() << " topic filter(s)\n";

  std::ofstream cap;
  if (!capture.empty())
    cap.open(capture);
  std::map<std::string, lock_tally> tallies;
  std::map<std::string, std::uint64_t> per_topic;
  std::set<std::string> ids_seen_twice;
  std::uint64_t unique = 0, messages = 0, bad_messages = 0;
  auto start = std::chrono::steady_clock::now();
  auto last_message = start;
  auto first_event = start, last_event = start;
  bool any_event = false;
  auto unix_s = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  };
  double first_event_unix = 0, last_event_unix = 0;
  while (!stop_requested) {
    auto now = std::chrono::steady_clock::now();
    if (std::chrono::duration<double>(now - start).count() > timeout_s)
      break;
    if (expect > 0 && unique >= expect)
      break;
    if (idle_exit_s > 0 && any_event
        && std::chrono::duration<double>(now - last_message).count() > idle_exit_s)
      break;
    mqtt::const_message_ptr msg;
    bool got = false;
    try {
      got = client.try_consume_message_for(&msg, std::chrono::milliseconds{200});
    } catch (const mqtt::exception& e) {
      std::cerr << "checker: " << e.what() << "; still waiting (automatic reconnection)\n";
      std::this_thread::sleep_for(std::chrono::milliseconds{200});
      continue;
    }
    if (!got || !msg) {
      if (cap.is_open())
        cap.flush(); // quiet for 200 ms: what was captured is on disk for readers
      continue;
    }
    ++messages;
    last_message = std::chrono::steady_clock::now();
    const auto& topic = msg->get_topic();
    ++per_topic[topic];
    if (cap.is_open())
      cap << nlohmann::json{{"topic", topic}, {"retained", msg->is_retained()},
                            {"payload", msg->get_payload_str()}}
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
    if (cap.is_open() && per_topic.size() > 0 && (messages % 256 == 0))
      cap.flush();
    if (topic.size() < 7 || topic.compare(topic.size() - 7, 7, "/events") != 0)
      continue;
    auto doc = nlohmann::json::parse(msg->get_payload_str(), nullptr, false);
    if (doc.is_discarded() || !doc.contains("events") || !doc["events"].is_array()) {
      ++bad_messages;
      continue;
    }
    for (const auto& ev : doc["events"]) {
      if (!ev.contains("lock") || !ev.contains("seq") || !ev.contains("event_id")) {
        ++bad_messages;
        continue;
      }
      auto& t = tallies[ev["lock"].get<std::string>()];
      auto seq = ev["seq"].get<std::uint64_t>();
      ++t.received;
      if (seq >= t.seen.size())
        t.seen.resize(std::max<std::size_t>(seq + 1, t.seen.size() * 2), false);
      if (t.seen[seq]) {
        ++t.duplicates;
        continue;
      }
      if (seq < t.highest)
        ++t.order_violations;
      t.seen[seq] = true;
      t.highest = std::max(t.highest, seq);
      ++t.unique;
      ++unique;
      if (!any_event) {
        first_event = last_message;
        first_event_unix = unix_s();
      }
      any_event = true;
      last_event = last_message;
      last_event_unix = unix_s();
    }
  }
  try {
    client.stop_consuming(); // (throws if the link is down at this moment)
    client.disconnect()->wait_for(2000);
  } catch (const std::exception&) {
  }

  nlohmann::json report;
  report["messages"] = messages;
  report["bad_messages"] = bad_messages;
  report["unique_events"] = unique;
  report["events_span_s"] = std::chrono::duration<double>(last_event - first_event).count();
  report["first_event_unix"] = first_event_unix;
  report["last_event_unix"] = last_event_unix;
  report["elapsed_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::uint64_t duplicates = 0, gaps = 0, violations = 0;
  for (auto& [lock, t] : tallies) {
    std::uint64_t missing = 0, first = 0;
    auto ranges = nlohmann::json::array(); // [first, last] of each run of missing seqs (100 at most)
    for (std::uint64_t s = 1; s <= t.highest; ++s)
      if (!t.seen[s]) {
        ++missing;
        if (first == 0)
          first = s;
        if (!ranges.empty() && ranges.back()[1].get<std::uint64_t>() + 1 == s)
          ranges.back()[1] = s;
        else if (ranges.size() < 100)
          ranges.push_back({s, s});
      }
    report["locks"][lock] = {{"received", t.received}, {"unique", t.unique},
                             {"highest_seq", t.highest}, {"duplicates", t.duplicates},
                             {"gaps", missing}, {"first_gap", first}, {"gap_ranges", ranges},
                             {"order_violations", t.order_violations}};
    duplicates += t.duplicates;
    gaps += missing;
    violations += t.order_violations;
  }
  report["duplicates"] = duplicates;
  report["gaps"] = gaps;
  report["order_violations"] = violations;
  report["topics"] = per_topic;
  std::cout << report.dump() << std::endl;
  return 0;
}
