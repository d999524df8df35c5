#pragma once
// Where a cmd_result goes before it is published: the sealed outbox
// (store/outbox.hpp), so that a restart while the cloud is away loses none.

#include <cstdint>
#include <string>
#include <string_view>

#include "store/vault.hpp"

namespace lockbridge {

/// Keeps the cmd_result `payload` in the outbox; with `command_id`, also
/// marks that lock command answered in the same transaction. Returns its
/// outbox number, or 0 when the disk refused it: the failure is logged
/// (naming `owner`), a storage fault is recorded in `v.storage` (status),
/// and the caller publishes the result from memory.
std::uint64_t keep_result(store::vault& v, std::string_view owner, std::string_view payload,
                          std::string_view command_id = {});

} // namespace lockbridge
