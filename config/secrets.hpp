#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "protocols/result.hpp"

namespace lockbridge::config {

/// Reads a lock's pre-shared key: the file's bytes without a trailing newline,
/// 16 to 64 bytes. Never logs or returns the key in an error.
result<std::vector<std::uint8_t>> read_psk(const std::filesystem::path& file);

/// Reads a 256-bit key: 32 raw bytes, or 64 hex digits (optionally followed by
/// a newline).
result<std::array<std::uint8_t, 32>> read_key32(const std::filesystem::path& file);

/// True if others (not owner, not group) may read `file`.
bool world_readable(const std::filesystem::path& file);

} // namespace lockbridge::config
