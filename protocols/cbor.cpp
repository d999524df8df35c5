#include "protocols/cbor.hpp"

#include <set>

namespace lockbridge::protocol::cbor {

void writer::head(major type, std::uint64_t argument) {
  auto initial = static_cast<std::uint8_t>(static_cast<std::uint8_t>(type) << 5);
  auto put = [&](std::uint8_t info, int bytes) {
    out_.push_back(initial | info);
    for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8)
      out_.push_back(static_cast<std::uint8_t>(argument >> shift));
  };
  if (argument < 24)
    out_.push_back(initial | static_cast<std::uint8_t>(argument));
  else if (argument <= 0xff)
    put(24, 1);
  else if (argument <= 0xffff)
    put(25, 2);
  else if (argument <= 0xffffffff)
    put(26, 4);
  else
    put(27, 8);
}

void writer::integer(std::int64_t value) {
  if (value >= 0)
    head(major::unsigned_integer, static_cast<std::uint64_t>(value));
  else // -1 - n, computed without overflow for INT64_MIN
    head(major::negative_integer, static_cast<std::uint64_t>(-(value + 1)));
}

void writer::text(std::string_view value) {
  head(major::text_string, value.size());
  out_.insert(out_.end(), value.begin(), value.end());
}

std::string_view head::type_name() const noexcept {
  switch (type) {
  case major::unsigned_integer:
    return "unsigned integer";
  case major::negative_integer:
    return "negative integer";
  case major::byte_string:
    return "byte string";
  case major::text_string:
    return "text string";
  case major::array:
    return "array";
  case major::map:
    return "map";
  case major::tag:
    return "tagged item";
  case major::simple:
    break;
  }
  switch (info) {
  case 20:
  case 21:
    return "boolean";
  case 22:
    return "null";
  case 23:
    return "undefined";
  case 25:
  case 26:
  case 27:
    return "float";
  default:
    return "simple value";
  }
}

std::optional<head> reader::next() {
  if (position_ >= input_.size())
    return std::nullopt;
  auto start = position_;
  auto initial = input_[position_++];
  head h;
  h.type = static_cast<major>(initial >> 5);
  h.info = initial & 0x1f;
  if (h.info < 24) {
    h.argument = h.info;
  } else if (h.info <= 27) {
    std::size_t bytes = std::size_t{1} << (h.info - 24);
    if (input_.size() - position_ < bytes) {
      position_ = start;
      return std::nullopt;
    }
    for (std::size_t i = 0; i < bytes; ++i)
      h.argument = (h.argument << 8) | input_[position_++];
  } else if (h.info == 31 && (h.type == major::array || h.type == major::map)) {
    h.indefinite = true;
  } else {
    // 28-30 are reserved; 31 elsewhere is an indefinite string (refused) or
    // a stray "break".
    position_ = start;
    return std::nullopt;
  }
  return h;
}

std::optional<std::string_view> reader::text(const head& h) {
  if (h.type != major::text_string || h.argument > input_.size() - position_)
    return std::nullopt;
  std::string_view view{reinterpret_cast<const char*>(input_.data() + position_),
                        static_cast<std::size_t>(h.argument)};
  position_ += static_cast<std::size_t>(h.argument);
  return view;
}

std::optional<std::span<const std::uint8_t>> reader::bytes(const head& h) {
  if (h.type != major::byte_string || h.argument > input_.size() - position_)
    return std::nullopt;
  auto view = input_.subspan(position_, static_cast<std::size_t>(h.argument));
  position_ += static_cast<std::size_t>(h.argument);
  return view;
}

bool reader::take_break() {
  if (position_ < input_.size() && input_[position_] == 0xff) {
    ++position_;
    return true;
  }
  return false;
}

bool is_valid_utf8(std::string_view text) noexcept {
  auto s = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t extra = 0;
    std::uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false; // continuation byte, overlong lead (c0, c1) or beyond U+10FFFF
    }
    if (n - i <= extra)
      return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      if ((s[i + k] & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff))
        || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += extra + 1;
  }
  return true;
}

std::optional<std::string> check_shape(std::span<const std::uint8_t> input,
                                       std::size_t max_depth) {
  struct frame {
    bool map = false;
    bool indefinite = false;
    std::uint64_t remaining = 0; ///< items still to come (a map's keys and values both count)
    std::uint64_t taken = 0;
    std::set<std::string_view> keys;
  };
  std::vector<frame> open;
  reader in{input};
  auto at = [&](std::size_t position) { return " at byte " + std::to_string(position); };
  bool started = false;
  for (;;) {
    // Close what is complete.
    while (!open.empty()) {
      auto& f = open.back();
      if (f.indefinite) {
        auto position = in.position();
        if (!in.take_break())
          break;
        if (f.map && f.taken % 2 != 0)
          return "map ends after a key without its value" + at(position);
      } else if (f.remaining > 0) {
        break;
      }
      open.pop_back();
    }
    if (started && open.empty())
      break;
    started = true;
    auto position = in.position();
    auto h = in.next();
    if (!h)
      return (in.at_end() ? "truncated CBOR" : "malformed CBOR") + at(position);
    bool is_key = false;
    if (!open.empty()) {
      auto& f = open.back();
      is_key = f.map && f.taken % 2 == 0;
      ++f.taken;
      if (!f.indefinite)
        --f.remaining;
    }
    if (is_key && h->type != major::text_string)
      return "map key is a " + std::string{h->type_name()} + "; expected a text string"
             + at(position);
    auto left = input.size() - in.position();
    switch (h->type) {
    case major::unsigned_integer:
      break;
    case major::negative_integer:
      // Below -2^63 a DOM parser's signed integer wraps to a wrong value.
      if (h->argument > static_cast<std::uint64_t>(INT64_MAX))
        return "negative integer below -2^63" + at(position);
      break;
    case major::byte_string:
      if (!in.bytes(*h))
        return "byte string of " + std::to_string(h->argument) + " bytes runs past the end"
               + at(position);
      break;
    case major::text_string: {
      auto text = in.text(*h);
      if (!text)
        return "text string of " + std::to_string(h->argument) + " bytes runs past the end"
               + at(position);
      if (!is_valid_utf8(*text))
        return "text string is not valid UTF-8" + at(position);
      if (is_key && !open.back().keys.insert(*text).second)
        return "map key appears twice" + at(position) + "; each key may appear once";
      break;
    }
    case major::array:
    case major::map: {
      if (open.size() + 1 > max_depth)
        return "arrays and maps nested more than " + std::to_string(max_depth) + " deep"
               + at(position);
      frame f;
      f.map = h->type == major::map;
      f.indefinite = h->indefinite;
      // Every item takes at least one byte: a count beyond what remains is a lie.
      if (!f.indefinite) {
        if (h->argument > left / (f.map ? 2 : 1))
          return std::string{f.map ? "map of " : "array of "} + std::to_string(h->argument)
                 + (f.map ? " entries" : " items") + " cannot fit in the " + std::to_string(left)
                 + " bytes that remain" + at(position);
        f.remaining = h->argument * (f.map ? 2 : 1);
      }
      open.push_back(std::move(f));
      break;
    }
    case major::tag:
      return "tagged items are not used" + at(position);
    case major::simple:
      if (h->info != 20 && h->info != 21 && h->info != 22 && (h->info < 25 || h->info > 27))
        return "simple value " + std::to_string(h->argument) + " is not used; expected false, "
               "true, null or a float" + at(position);
      break;
    }
  }
  if (!in.at_end())
    return std::to_string(input.size() - in.position()) + " bytes after the item"
           + at(in.position());
  return std::nullopt;
}

} // namespace lockbridge::protocol::cbor
