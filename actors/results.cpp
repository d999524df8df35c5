#include "actors/results.hpp"

#include <spdlog/spdlog.h>

#include "protocols/clock_guard.hpp"

namespace lockbridge {

std::uint64_t keep_result(store::vault& v, std::string_view owner, std::string_view payload,
                          std::string_view command_id) {
  try {
    auto number = command_id.empty() ? v.results->append(payload)
                                     : v.results->append_answer(payload, command_id);
    v.storage.recovered();
    return number;
  } catch (const std::exception& e) {
    if (auto* fault = dynamic_cast<const store::store_error*>(&e);
        fault != nullptr && fault->why() == store::store_error::kind::storage)
      v.storage.fail(e.what(), protocol::unix_ms_now());
    spdlog::error("{}: cannot keep a command result on disk ({}); it is sent from memory and "
                  "lost if the gateway stops before the broker has it",
                  owner, e.what());
  }
  return 0;
}

command_reply_ptr keep_reply(store::vault* v, std::string_view owner, const std::string& site,
                             const std::string& gateway, const protocol::command_result& r,
                             std::string_view answers) {
  command_reply out;
  out.id = r.id;
  out.final = r.status != "pending";
  out.payload = protocol::encode_command_result(site, gateway, r);
  if (v != nullptr)
    out.number = keep_result(*v, owner, out.payload, answers);
  return std::make_shared<const command_reply>(std::move(out));
}

} // namespace lockbridge
