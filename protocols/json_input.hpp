#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "protocols/result.hpp"

/// JSON that comes from outside (the cloud's commands) and JSON that carries
/// text from outside. Cold paths: nlohmann's DOM, held to the same rules as
/// lock input.
namespace lockbridge::protocol {

/// Parses `text` as one JSON object: at most `max_bytes`, arrays and objects
/// nested at most `max_depth` deep, no key twice in one object (a repeated
/// key is refused, naming it, instead of the last one silently winning).
/// Never throws.
result<nlohmann::json> parse_json_input(std::string_view text, std::size_t max_bytes,
                                        std::size_t max_depth);

/// `doc.dump()` that never throws: text that is not valid UTF-8 (a value cut
/// from outside input) is written with U+FFFD in place of the bad bytes.
std::string dump_safe(const nlohmann::json& doc);

/// The longest prefix of `text` of at most `max_bytes` that does not end in
/// the middle of a UTF-8 sequence (for shortening text from outside).
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) noexcept;

} // namespace lockbridge::protocol
