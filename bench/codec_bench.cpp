// lockbridge-codec-bench: CPU cost of the per-event hot-path codecs, next to
// a baseline in the same run (nlohmann's DOM for CBOR and JSON, OpenSSL's
// one-shot HMAC()). Prints nanoseconds per operation; asserts nothing.

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocols/ble_link.hpp"
#include "protocols/cloud_messages.hpp"
#include "protocols/credentials.hpp"
#include "protocols/json_input.hpp"
#include "protocols/lock_messages.hpp"
#include "protocols/pseudonym.hpp"
#include "store/sealing.hpp"

namespace {

std::size_t sink_value = 0;

/// Keeps a result alive so the optimiser cannot drop the work.
struct {
  void operator+=(std::size_t v) {
    sink_value += v;
    asm volatile("" : : "r"(sink_value) : "memory");
  }
} sink;

template <class F>
double ns_per_op(F&& f) {
  using clock = std::chrono::steady_clock;
  // Warm up, then run for about 0.3 s, bounded in count.
  for (int i = 0; i < 1000; ++i)
    f();
  std::size_t n = 0;
  auto start = clock::now();
  auto deadline = start + std::chrono::milliseconds{300};
  while (clock::now() < deadline && n < 50'000'000) {
    for (int i = 0; i < 256; ++i)
      f();
    n += 256;
  }
  return std::chrono::duration<double, std::nano>(clock::now() - start).count()
         / static_cast<double>(n);
}

/// Milliseconds per run of something slow (a whole snapshot chunk): the
/// median of 5 runs after one warm-up.
template <class F>
double ms_median(F&& f) {
  using clock = std::chrono::steady_clock;
  f();
  std::vector<double> runs;
  for (int i = 0; i < 5; ++i) {
    auto start = clock::now();
    f();
    runs.push_back(std::chrono::duration<double, std::milli>(clock::now() - start).count());
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

void row_ms(const char* what, double ours, double baseline, const char* baseline_name) {
  std::printf("  %-34s %8.1f ms   %-28s %8.1f ms   %5.2fx\n", what, ours, baseline_name, baseline,
              baseline / ours);
}

/// The largest snapshot chunk the cloud may send: 10,000 credentials with 40
/// doors each and a weekly schedule, about 8 MB of JSON.
std::string big_snapshot_chunk() {
  nlohmann::json creds = nlohmann::json::array();
  for (int i = 0; i < 10000; ++i) {
    nlohmann::json doors = nlohmann::json::array();
    for (int d = 0; d < 40; ++d)
      doors.push_back("door-" + std::to_string(1000 + (i + d) % 4000));
    creds.push_back({{"cred", "CARD-" + std::to_string(100000 + i)},
                     {"subject", "subject-" + std::to_string(i % 2000)},
                     {"doors", std::move(doors)},
                     {"valid_from", 1700000000000},
                     {"valid_until", "2027-12-31T18:00"},
                     {"schedule", {{{"days", {"mon", "tue", "wed", "thu", "fri"}},
                                    {"from", "07:00"}, {"to", "19:30"}}}}});
  }
  return nlohmann::json{{"schema", "lockbridge/credentials-snapshot/1"},
                        {"id", "cmd-snapshot-1"},
                        {"snapshot", "snap-1"},
                        {"version", 42},
                        {"chunk", 1},
                        {"chunks", 1},
                        {"credentials", std::move(creds)}}
    .dump();
}

void row(const char* what, double ours, double baseline, const char* baseline_name) {
  std::printf("  %-34s %8.0f ns   %-28s %8.0f ns   %5.1fx\n", what, ours, baseline_name, baseline,
              baseline / ours);
}

} // namespace

int main() {
  using namespace lockbridge::protocol;
  event_batch one;
  one.events.push_back({1234, 1764230000000, "access_granted", "door-01", "CARD-lock-01-17",
                        std::nullopt});
  event_batch ten;
  for (std::uint64_t i = 1; i <= 10; ++i)
    ten.events.push_back({i, 1764230000000, "access_granted", "door-01", "CARD-lock-01-17",
                          std::nullopt});
  auto one_bytes = encode_event_batch(one);
  auto ten_bytes = encode_event_batch(ten);

  journal_record record{"lock-01",   1234, 1764230000000, "access_granted", "door-01",
                        "p1.1.Wd3Vq2m5c1yJ8J3l0ZrXxq0y0F2s3y9mYV0xqkq0a1s", std::nullopt,
                        1764230000123};
  auto record_bytes = encode_record(record);
  nlohmann::json record_doc = nlohmann::json::from_cbor(record_bytes);

  pseudonymiser::key_type key{};
  for (std::size_t i = 0; i < key.size(); ++i)
    key[i] = static_cast<std::uint8_t>(i * 7 + 1);
  pseudonymiser pseudonyms{key, 1};

  std::printf("lockbridge codec micro-benchmark (per operation; higher x = faster than "
              "baseline)\n");
  row("decode batch, 1 event", ns_per_op([&] { sink += decode_event_batch(one_bytes)->events.size(); }),
      ns_per_op([&] { sink += nlohmann::json::from_cbor(one_bytes).size(); }),
      "nlohmann from_cbor (DOM)");
  row("decode batch, 10 events",
      ns_per_op([&] { sink += decode_event_batch(ten_bytes)->events.size(); }),
      ns_per_op([&] { sink += nlohmann::json::from_cbor(ten_bytes).size(); }),
      "nlohmann from_cbor (DOM)");
  row("encode journal record", ns_per_op([&] { sink += encode_record(record).size(); }),
      ns_per_op([&] { sink += nlohmann::json::to_cbor(record_doc).size(); }),
      "nlohmann to_cbor");
  row("decode journal record", ns_per_op([&] { sink += decode_record(record_bytes)->seq; }),
      ns_per_op([&] { sink += nlohmann::json::from_cbor(record_bytes).size(); }),
      "nlohmann from_cbor (DOM)");
  row("events JSON, 1 event",
      ns_per_op([&] { sink += encode_events("site-1", "gw-1", {&record, 1}).size(); }),
      ns_per_op([&] {
        nlohmann::json doc = {{"schema", "lockbridge/events/1"}, {"site", "site-1"},
                              {"gateway", "gw-1"},
                              {"events", nlohmann::json::array({{{"event_id", "gw-1/lock-01/1234"},
                                                                 {"lock", record.lock},
                                                                 {"seq", record.seq},
                                                                 {"ts", record.ts},
                                                                 {"type", record.type},
                                                                 {"door", record.door},
                                                                 {"cred", *record.cred},
                                                                 {"received_at", record.received_at}}})}};
        sink += doc.dump().size();
      }),
      "nlohmann DOM + dump");
  row("pseudonym (HMAC-SHA-256)", ns_per_op([&] { sink += pseudonyms("CARD-lock-01-17").size(); }),
      ns_per_op([&] {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int size = 0;
        static const std::string message = "lockbridge/credential-pseudonym/v1" + std::string(1, '\0')
                                           + "CARD-lock-01-17";
        HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
             reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &size);
        sink += size;
      }),
      "OpenSSL one-shot HMAC()");

  // Sealing at rest (issue 4): what every stored value costs on top of its
  // encoding. The baseline is the encoding alone, so x < 1 is the price.
  auto dir = std::filesystem::temp_directory_path() / ("lockbridge-bench-" + std::to_string(::getpid()));
  {
    auto env = std::make_shared<lockbridge::store::environment>(dir, 64ull << 20);
    lockbridge::store::key256 kek;
    kek.fill(0x5a);
    lockbridge::store::keyring keys{env, kek};
    std::uint8_t lmdb_key[8] = {0, 0, 0, 0, 0, 0, 4, 210};
    auto sealed = keys.seal(lockbridge::store::table::journal, lmdb_key, record_bytes);
    row("encode + seal journal record",
        ns_per_op([&] {
          sink += keys.seal(lockbridge::store::table::journal, lmdb_key, encode_record(record))
                    .size();
        }),
        ns_per_op([&] { sink += encode_record(record).size(); }), "encode only (not sealed)");
    row("open + decode journal record",
        ns_per_op([&] {
          sink += decode_record(*keys.open(lockbridge::store::table::journal, lmdb_key, sealed))
                    ->seq;
        }),
        ns_per_op([&] { sink += decode_record(record_bytes)->seq; }), "decode only (not sealed)");
    lockbridge::protocol::keyed_hmac lookup{key, "lockbridge/credential-lookup/v1"};
    row("pseudonym via lookup key (2 HMACs)", ns_per_op([&] {
          auto mac = lookup("CARD-lock-01-17");
          sink += pseudonyms(std::string_view{reinterpret_cast<const char*>(mac.data()),
                                              mac.size()})
                    .size();
        }),
        ns_per_op([&] { sink += pseudonyms("CARD-lock-01-17").size(); }),
        "one HMAC over the identifier");
  }
  std::filesystem::remove_all(dir);

  // BLE (issue 7): what a 10-event batch costs on the way in over BLE on top
  // of decoding it, the baseline: reassembling its fragments (ATT MTU 185),
  // opening it (AES-256-GCM) and decoding.
  {
    namespace ble = lockbridge::protocol::ble;
    std::array<std::uint8_t, ble::nonce_bytes> g{}, l{};
    std::vector<std::uint8_t> psk(32, 0x42);
    auto k = ble::derive_session_keys(psk, "lock-01", g, l);
    auto message = ble::seal(k.from_lock, ble::kind::events, 7, ten_bytes);
    auto parts = *ble::fragment(1, message, 185);
    std::printf("(a 10-event batch: %zu bytes of CBOR, %zu sealed, %zu fragments at MTU 185)\n",
                ten_bytes.size(), message.size(), parts.size());
    row("BLE in: reassemble + open + decode",
        ns_per_op([&] {
          ble::reassembler r{2000};
          std::vector<std::uint8_t> whole;
          for (const auto& p : parts)
            if (auto o = r.add(p, 0); o.result == ble::reassembler::outcome::what::complete)
              whole = std::move(o.message);
          sink += decode_event_batch(ble::open(k.from_lock, whole)->body)->events.size();
        }),
        ns_per_op([&] { sink += decode_event_batch(ten_bytes)->events.size(); }),
        "decode only");
    row("BLE session keys (2 HKDF)", ns_per_op([&] {
          sink += ble::derive_session_keys(psk, "lock-01", g, l).to_lock[0];
        }),
        ns_per_op([&] { sink += decode_event_batch(ten_bytes)->events.size(); }),
        "decode a 10-event batch");
  }

  // Credential sync (issue 19): a snapshot chunk used to be parsed two or
  // three times (the command id from a DOM, then the decoder); it is parsed
  // once, strictly (no key twice), and the id of a refused one is found by a
  // SAX scan that stops at it. Baselines in the same run: the former path
  // (DOM for the id, then the decoder) and nlohmann's plain DOM parse.
  {
    auto chunk = big_snapshot_chunk();
    std::printf("(a snapshot chunk of 10,000 credentials, 40 doors each: %.1f MB of JSON)\n",
                static_cast<double>(chunk.size()) / 1e6);
    auto decode = [&] { sink += decode_snapshot_chunk(chunk)->credentials.size(); };
    row_ms("snapshot chunk: parse once", ms_median(decode), ms_median([&] {
             auto doc = nlohmann::json::parse(chunk);
             sink += doc["id"].get_ref<const std::string&>().size();
             decode();
           }),
           "id from a DOM, then decode");
    row_ms("snapshot chunk: strict DOM parse", ms_median([&] {
             auto doc = lockbridge::protocol::parse_json_input(chunk, 8 << 20, 8);
             sink += doc->size();
           }),
           ms_median([&] { sink += nlohmann::json::parse(chunk).size(); }),
           "plain nlohmann parse");
    row_ms("snapshot chunk: id of a refused one", ms_median([&] {
             sink += command_id_of(chunk)->size();
           }),
           ms_median([&] {
             auto doc = nlohmann::json::parse(chunk);
             sink += doc["id"].get_ref<const std::string&>().size();
           }),
           "id from a DOM");
  }
  return 0;
}
