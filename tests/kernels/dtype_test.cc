#include "kernels/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace tessera {
namespace {

// The compiler's own _Float16 conversions are the independent reference for binary16.
TEST(DTypeTest, F16ToFloatMatchesCompilerForEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 ref;
    const uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&ref, &bits, 2);
    const float expected = static_cast<float>(ref);
    const float got = F16ToFloat(bits);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(got, expected) << "half bits " << h;
    }
  }
}

TEST(DTypeTest, FloatToF16MatchesCompilerRounding) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<uint32_t> bits_dist;
  int checked = 0;
  for (int i = 0; i < 2000000; ++i) {
    uint32_t bits = bits_dist(gen);
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) continue;
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, 2);
    ASSERT_EQ(FloatToF16(f), ref_bits) << "float " << f << " bits " << bits;
    ++checked;
  }
  // Values near the half range (subnormals, rounding to max, overflow).
  for (float f : {65504.0f, 65519.0f, 65520.0f, 1e-8f, 5.96e-8f, 2.98e-8f, 6.1e-5f, -3.0e-6f}) {
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, 2);
    EXPECT_EQ(FloatToF16(f), ref_bits) << f;
  }
  EXPECT_GT(checked, 1000000);
}

// BF16 is the upper half of an F32; rounding must pick the nearest representable value, ties to
// the even mantissa.
TEST(DTypeTest, FloatToBf16RoundsToNearestEven) {
  std::mt19937 gen(11);
  std::uniform_int_distribution<uint32_t> bits_dist;
  for (int i = 0; i < 200000; ++i) {
    uint32_t bits = bits_dist(gen);
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isfinite(f) || std::fabs(f) > 1e38f) continue;
    const uint16_t down = static_cast<uint16_t>(bits >> 16);
    const uint16_t up = static_cast<uint16_t>(down + 1);
    const double d_down = std::fabs(static_cast<double>(Bf16ToFloat(down)) - f);
    const double d_up = std::fabs(static_cast<double>(Bf16ToFloat(up)) - f);
    const uint16_t expected = d_down < d_up ? down : d_up < d_down ? up : ((down & 1) ? up : down);
    ASSERT_EQ(FloatToBf16(f), expected) << f;
  }
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f)), 1.0f);
}

TEST(DTypeTest, ParseDTypeRejectsWhatCannotBeComputed) {
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("F16"), DType::kF16);
  EXPECT_EQ(*ParseDType("F32"), DType::kF32);
  auto bad = ParseDType("F8_E4M3");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("F8_E4M3"), std::string::npos);
  EXPECT_FALSE(ParseDType("F64").ok());
}

}  // namespace
}  // namespace tessera
