#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace lockbridge {

/// What went wrong with an input: the field it concerns (a dotted path such as
/// `events[3].seq`, empty for the whole input) and what was expected.
struct input_error {
  std::string field;
  std::string message;

  /// "field: message", or just the message when no field applies.
  [[nodiscard]] std::string to_string() const {
    return field.empty() ? message : field + ": " + message;
  }
};

/// The error for an input of `size` bytes over its limit of `max` bytes;
/// `what` names the input ("payload", "message").
inline input_error too_large(std::string_view what, std::size_t size, std::size_t max) {
  return {"", std::string{what} + " of " + std::to_string(size) + " bytes exceeds the limit of "
                + std::to_string(max)};
}

/// A value or the reason there is none. A small stand-in for C++23's
/// std::expected, which GCC 12 in C++20 mode lacks.
template <class T>
class result {
public:
  result(T value) : data_(std::move(value)) {}
  result(input_error err) : data_(std::move(err)) {}

  [[nodiscard]] bool ok() const noexcept { return data_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(data_); }
  const T& value() const& { return std::get<0>(data_); }
  T&& value() && { return std::get<0>(std::move(data_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  [[nodiscard]] const input_error& error() const { return std::get<1>(data_); }

private:
  std::variant<T, input_error> data_;
};

} // namespace lockbridge
