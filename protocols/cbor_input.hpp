#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <nlohmann/json.hpp>

#include "protocols/result.hpp"

namespace lockbridge::protocol {

/// Parses CBOR into a JSON value, refusing nesting deeper than `max_depth`
/// before building anything (nlohmann's decoder recurses per level, so a
/// hostile payload of nested arrays must not reach it).
result<nlohmann::json> parse_cbor(std::span<const std::uint8_t> payload,
                                  std::size_t max_depth);

/// Reads a required unsigned integer member of `obj`.
result<std::uint64_t> get_unsigned(const nlohmann::json& obj, const char* key,
                                   const std::string& path);

} // namespace lockbridge::protocol
