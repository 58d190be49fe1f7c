// The CPU GEMM on every instruction-set path this CPU can run (the portable one always), against
// a float64 loop, over shapes that are not multiples of any block: one row, one column, odd M,
// N and K on both sides of the GEMV / sgemm split, for F32, BF16 and F16 weights.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_isa.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using cpu::CpuIsa;
using testing::RandomFloats;

struct Shape {
  int64_t m, n, k;
};

// Weights in `dtype` (raw storage) and the exact values they hold.
struct StoredWeights {
  std::vector<float> values;
  std::vector<uint16_t> half;
  std::vector<float> f32;
  DType dtype;
  TensorView View(int64_t n, int64_t k) const {
    const void* p = dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : half.data();
    return TensorView::Of(p, dtype, {n, k});
  }
};

StoredWeights Store(std::vector<float> raw, DType dtype) {
  StoredWeights w{{}, {}, {}, dtype};
  w.values.resize(raw.size());
  if (dtype == DType::kF32) {
    w.f32 = raw;
    w.values = raw;
    return w;
  }
  w.half.resize(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    w.half[i] = dtype == DType::kBF16 ? FloatToBf16(raw[i]) : FloatToF16(raw[i]);
    w.values[i] = dtype == DType::kBF16 ? Bf16ToFloat(w.half[i]) : F16ToFloat(w.half[i]);
  }
  return w;
}

class CpuGemmTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(GetParam()) > static_cast<int>(cpu::DetectedCpuIsa())) {
      GTEST_SKIP() << "this CPU supports up to " << cpu::CpuIsaName(cpu::DetectedCpuIsa())
                   << "; the " << cpu::CpuIsaName(GetParam()) << " kernels cannot run here";
    }
    ASSERT_TRUE(cpu::ForceGemmIsa(GetParam()).ok());
    auto b = MakeBackend(BackendKind::kCpu);
    ASSERT_TRUE(b.ok());
    backend_ = std::move(b).value();
  }
  void TearDown() override { ASSERT_TRUE(cpu::ForceGemmIsa(cpu::DetectedCpuIsa()).ok()); }

  // Every output element within 4 k 2^-24 sum_t |x w| (+ the accumulated term's rounding) of
  // the float64 sum.
  void Check(Shape s, DType dtype, bool accumulate, uint32_t seed) {
    SCOPED_TRACE(::testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << s.k << " "
                                      << DTypeName(dtype) << (accumulate ? " accumulate" : ""));
    const std::vector<float> x = RandomFloats(s.m * s.k, seed);
    const StoredWeights w = Store(RandomFloats(s.n * s.k, seed + 1), dtype);
    const std::vector<float> y0 = RandomFloats(s.m * s.n, seed + 2);
    std::vector<float> y = y0;
    ASSERT_TRUE(backend_
                    ->Gemm({TensorView::Of(x.data(), DType::kF32, {s.m, s.k}), w.View(s.n, s.k),
                            TensorView::Of(y.data(), DType::kF32, {s.m, s.n}), accumulate})
                    .ok());
    int bad = 0;
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        double sum = accumulate ? y0[i * s.n + j] : 0.0, magnitude = std::fabs(sum);
        for (int64_t t = 0; t < s.k; ++t) {
          const double p = static_cast<double>(x[i * s.k + t]) * w.values[j * s.k + t];
          sum += p;
          magnitude += std::fabs(p);
        }
        const double bound = 4.0 * (s.k + 1) * std::ldexp(magnitude, -24) + 1e-30;
        if (std::fabs(y[i * s.n + j] - sum) > bound && ++bad <= 3) {
          ADD_FAILURE() << "y[" << i << "," << j << "] = " << y[i * s.n + j] << ", float64 " << sum
                        << ", bound " << bound;
        }
      }
    }
    EXPECT_EQ(bad, 0);
  }

  std::unique_ptr<Backend> backend_;
};

TEST_P(CpuGemmTest, GemvShapesMatchFloat64) {
  uint32_t seed = 10;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t m = 1; m <= 8; ++m) {
      for (Shape s : {Shape{m, 1, 1}, Shape{m, 1, 67}, Shape{m, 7, 8}, Shape{m, 13, 17},
                      Shape{m, 37, 100}, Shape{m, 70, 257}}) {
        Check(s, dtype, m % 2 == 0, seed += 3);
      }
    }
  }
}

TEST_P(CpuGemmTest, ManyRowShapesMatchFloat64) {
  uint32_t seed = 500;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (Shape s : {Shape{9, 1, 5}, Shape{9, 33, 31}, Shape{17, 5, 1}, Shape{33, 70, 130},
                    Shape{65, 129, 77}, Shape{128, 300, 96}}) {
      Check(s, dtype, false, seed += 3);
      Check(s, dtype, true, seed += 3);
    }
  }
}

// Large enough that the OpenMP team splits the rows (n k >= 2^18).
TEST_P(CpuGemmTest, ThreadedGemvMatchesFloat64) {
  Check({1, 1031, 515}, DType::kBF16, false, 900);
  Check({6, 613, 1001}, DType::kF32, true, 901);
  Check({8, 700, 777}, DType::kF16, false, 902);
}

INSTANTIATE_TEST_SUITE_P(Isas, CpuGemmTest,
                         ::testing::Values(CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(cpu::CpuIsaName(info.param));
                         });

TEST(CpuIsaTest, ForcingAnUnsupportedSetFailsAndKeepsTheCurrentOne) {
  const CpuIsa detected = cpu::DetectedCpuIsa();
  EXPECT_EQ(cpu::GemmIsa(), detected);
  if (detected == CpuIsa::kAvx512) GTEST_SKIP() << "this CPU supports every set";
  const absl::Status s = cpu::ForceGemmIsa(CpuIsa::kAvx512);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("cannot run the avx512 GEMM kernels"), std::string::npos) << s;
  EXPECT_EQ(cpu::GemmIsa(), detected);
}

}  // namespace
}  // namespace tessera
