#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

/// A small CBOR (RFC 8949) writer and streaming reader for the fixed shapes
/// lockbridge exchanges on its hot paths (lock event batches, journal
/// records). Nothing is built in between: the reader hands out item heads and
/// text views into the input, so decoding a batch allocates only what the
/// decoded structs hold. Cold paths keep using nlohmann's DOM.
namespace lockbridge::protocol::cbor {

enum class major : std::uint8_t {
  unsigned_integer = 0,
  negative_integer = 1,
  byte_string = 2,
  text_string = 3,
  array = 4,
  map = 5,
  tag = 6,
  simple = 7,
};

/// Appends CBOR items in preferred (shortest) serialisation.
class writer {
public:
  explicit writer(std::vector<std::uint8_t>& out) : out_(out) {}

  void map(std::size_t entries) { head(major::map, entries); }
  void array(std::size_t items) { head(major::array, items); }
  void unsigned_integer(std::uint64_t value) { head(major::unsigned_integer, value); }
  void integer(std::int64_t value);
  void text(std::string_view value);
  void boolean(bool value) { head(major::simple, value ? 21 : 20); }

private:
  void head(major type, std::uint64_t argument);

  std::vector<std::uint8_t>& out_;
};

/// The head of one data item: its major type and argument (a value, a
/// length or a count). For indefinite lengths, `indefinite` is set.
struct head {
  major type = major::simple;
  std::uint8_t info = 0;        ///< the low five bits of the initial byte
  std::uint64_t argument = 0;
  bool indefinite = false;

  /// A short English name of the item's type for diagnostics
  /// ("unsigned integer", "text string", "map", "float", ...).
  [[nodiscard]] std::string_view type_name() const noexcept;
};

/// Reads items one by one from a byte span. Every read checks the bounds;
/// on malformed or truncated input it returns nothing and `position()` tells
/// where decoding stopped.
class reader {
public:
  explicit reader(std::span<const std::uint8_t> input) : input_(input) {}

  /// The next item's head, consumed. Indefinite-length byte and text strings
  /// are refused (they are rare and not worth their complexity here).
  std::optional<head> next();

  /// After a text-string head: the string's bytes, consumed.
  std::optional<std::string_view> text(const head& h);

  /// After a byte-string head: the string's bytes, consumed.
  std::optional<std::span<const std::uint8_t>> bytes(const head& h);

  /// True (and consumed) if the next byte is the "break" that ends an
  /// indefinite-length array or map.
  bool take_break();

  [[nodiscard]] bool at_end() const noexcept { return position_ == input_.size(); }
  [[nodiscard]] std::size_t position() const noexcept { return position_; }

private:
  std::span<const std::uint8_t> input_;
  std::size_t position_ = 0;
};

/// True if `text` is well-formed UTF-8 (no overlong forms, no surrogates).
bool is_valid_utf8(std::string_view text) noexcept;

/// Checks, without recursion and before any DOM parser sees them, that
/// `input` is exactly one well-formed CBOR item of the kind lockbridge's lock
/// protocol uses: arrays and maps nested at most `max_depth` deep, every
/// declared length within the bytes that remain, text strings valid UTF-8,
/// map keys unique text strings, no tags, no simple values other than false,
/// true, null and floats. An item that passes cannot make nlohmann's
/// `from_cbor` throw, recurse deeply or build text `dump()` refuses.
/// Returns the first problem found, with its byte offset.
std::optional<std::string> check_shape(std::span<const std::uint8_t> input,
                                       std::size_t max_depth);

} // namespace lockbridge::protocol::cbor
