#pragma once
// Shared by the store's unit tests.

#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "store/environment.hpp"
#include "store/sealing.hpp"

namespace lockbridge::test {

/// A fresh state directory under the system's temp dir, removed afterwards.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path()
           / ("lockbridge-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
};

inline store::key256 test_kek(std::uint8_t fill = 0x4b) {
  store::key256 k;
  k.fill(fill);
  return k;
}

/// The keyring of `env` under the test KEK.
inline std::shared_ptr<store::keyring> ring(const std::shared_ptr<store::environment>& env) {
  return std::make_shared<store::keyring>(env, test_kek());
}

} // namespace lockbridge::test
