#pragma once

namespace lockbridge::transport {

/// Asks the scheduler to run the calling thread, which locks wait on (the
/// CoAP and BLE I/O threads, the journal's commits), ahead of bulk work:
/// nice -10. That needs CAP_SYS_NICE, root, or an RLIMIT_NICE that allows
/// it (the unit's LimitNICE=-10). Never fails: without, the thread keeps
/// the process's priority and a debug line under `who` says why.
void prefer_this_thread(const char* who) noexcept;

} // namespace lockbridge::transport
