#pragma once

#include <exception>
#include <type_traits>
#include <utility>

/// The boundary where a C library (libcoap, sd-bus) calls into lockbridge.
/// No exception may unwind through its frames: that is std::terminate at
/// best, a corrupted library state at worst. Decoders return errors; this is
/// for what is left (an allocation that fails, a bug).
namespace lockbridge::transport {

/// Logs an exception that reached a callback boundary: at most one line per
/// 10 s for the process (with how many were held back), never throwing.
void report_escaped(const char* where, const char* what) noexcept;

/// Runs `body`; an exception is reported and `on_failure` runs instead (it
/// answers the peer with an error, or returns the library's error value).
/// Whatever `on_failure` throws is swallowed too.
template <class Body, class Failure>
auto contain(const char* where, Body&& body, Failure&& on_failure) noexcept
  -> decltype(body()) {
  try {
    return std::forward<Body>(body)();
  } catch (const std::exception& e) {
    report_escaped(where, e.what());
  } catch (...) {
    report_escaped(where, "an exception of unknown type");
  }
  try {
    return std::forward<Failure>(on_failure)();
  } catch (...) {
    report_escaped(where, "the error answer failed too");
  }
  if constexpr (!std::is_void_v<decltype(body())>)
    return decltype(body()){};
}

} // namespace lockbridge::transport
