#pragma once

#include <string>
#include <string_view>

namespace lockbridge::protocol {

/// Structured fields for a log line, taken from its text so that every call
/// site's wording ("coap: lock lock-07 sent ...") feeds them without a second
/// logging API: the component is the word before the first ": ", the lock the
/// id after "lock " (ids are [A-Za-z0-9_-]{1,64}). Log lines never carry
/// personal data, so nothing else is extracted.
struct log_fields {
  std::string component; ///< e.g. "coap", "uplink", "journal"; empty if none
  std::string lock;      ///< a lock id mentioned, or empty
};

log_fields fields_of(std::string_view message);

/// `text` made safe to echo in one log line: control characters (newline,
/// carriage return, escape, NUL and the rest below 0x20, and 0x7f) become
/// `\xNN`, so a value from outside (a config value, a lock's identity, a
/// cloud command) can neither start a forged line nor move the terminal.
std::string printable_text(std::string_view text);

} // namespace lockbridge::protocol
