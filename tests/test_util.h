// Status assertions for GoogleTest (Abseil 20220623 ships no status matchers) and small helpers
// shared by the test suites.
#ifndef TESSERA_TESTS_TEST_UTIL_H_
#define TESSERA_TESTS_TEST_UTIL_H_

#include <cmath>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

#define TESSERA_TEST_CONCAT_INNER_(a, b) a##b
#define TESSERA_TEST_CONCAT_(a, b) TESSERA_TEST_CONCAT_INNER_(a, b)

#define EXPECT_OK(expr)                                   \
  do {                                                    \
    const ::absl::Status _s = ::tessera::testing::ToStatus(expr); \
    EXPECT_TRUE(_s.ok()) << _s;                           \
  } while (0)
#define ASSERT_OK(expr)                                   \
  do {                                                    \
    const ::absl::Status _s = ::tessera::testing::ToStatus(expr); \
    ASSERT_TRUE(_s.ok()) << _s;                           \
  } while (0)

#define TESSERA_ASSERT_OK_AND_ASSIGN_IMPL_(var, lhs, expr) \
  auto var = (expr);                                       \
  ASSERT_TRUE(var.ok()) << var.status();                   \
  lhs = std::move(var).value()
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  TESSERA_ASSERT_OK_AND_ASSIGN_IMPL_(TESSERA_TEST_CONCAT_(_statusor_, __LINE__), lhs, expr)

namespace tessera::testing {

inline absl::Status ToStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status ToStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// ||a - b|| / ||b|| over all elements.
inline double RelativeError(const float* a, const float* b, size_t n) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < n; ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(ref, 1e-300));
}

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_TEST_UTIL_H_
