// Every CPU op against a plain double-precision loop written here from the op's definition.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::RandomFloats;
using testing::RelativeError;

// Weights stored in `dtype`, plus the exact F32 values they represent.
struct Weights {
  std::vector<uint16_t> half;
  std::vector<float> f32;  // storage for F32, and the reference values for every dtype
  DType dtype;
  TensorView View(std::initializer_list<int64_t> dims) const {
    return TensorView::Of(dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : half.data(),
                          dtype, dims);
  }
};

Weights MakeWeights(const std::vector<float>& values, DType dtype) {
  Weights w{{}, values, dtype};
  if (dtype == DType::kF32) return w;
  w.half.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    w.half[i] = dtype == DType::kBF16 ? FloatToBf16(values[i]) : FloatToF16(values[i]);
    w.f32[i] = dtype == DType::kBF16 ? Bf16ToFloat(w.half[i]) : F16ToFloat(w.half[i]);
  }
  return w;
}

class CpuOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = MakeBackend(BackendKind::kCpu);
    ASSERT_TRUE(b.ok());
    backend_ = std::move(b).value();
  }
  std::unique_ptr<Backend> backend_;
};

struct GemmCase {
  int64_t m, n, k;
  DType dtype;
  bool accumulate;
};

class GemmTest : public CpuOpsTest, public ::testing::WithParamInterface<GemmCase> {};

TEST_P(GemmTest, MatchesDoubleReference) {
  const GemmCase p = GetParam();
  std::vector<float> x = RandomFloats(p.m * p.k, 1);
  Weights w = MakeWeights(RandomFloats(p.n * p.k, 2), p.dtype);
  std::vector<float> y0 = RandomFloats(p.m * p.n, 3);
  std::vector<float> y = y0;
  ASSERT_OK(backend_->Gemm({TensorView::Of(x.data(), DType::kF32, {p.m, p.k}),
                            w.View({p.n, p.k}), TensorView::Of(y.data(), DType::kF32, {p.m, p.n}),
                            p.accumulate}));
  std::vector<float> ref(p.m * p.n);
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      double s = p.accumulate ? y0[i * p.n + j] : 0.0;
      for (int64_t t = 0; t < p.k; ++t) s += static_cast<double>(x[i * p.k + t]) * w.f32[j * p.k + t];
      ref[i * p.n + j] = static_cast<float>(s);
    }
  }
  EXPECT_LT(RelativeError(y.data(), ref.data(), ref.size()), 2e-6);
}

// m <= 8 takes the fused GEMV path for half weights, larger m the widen-then-sgemm path; odd k
// exercises the vector tails.
INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmTest,
    ::testing::Values(GemmCase{1, 37, 64, DType::kBF16, false}, GemmCase{1, 64, 67, DType::kF16, false},
                      GemmCase{3, 50, 129, DType::kBF16, true}, GemmCase{8, 33, 31, DType::kF16, false},
                      GemmCase{9, 40, 96, DType::kBF16, false}, GemmCase{33, 70, 130, DType::kF16, true},
                      GemmCase{5, 300, 1000, DType::kBF16, false}, GemmCase{1, 17, 9, DType::kF32, false},
                      GemmCase{12, 48, 80, DType::kF32, true}, GemmCase{64, 1100, 512, DType::kBF16, false}));

TEST_F(CpuOpsTest, RmsNormMatchesDefinition) {
  const int64_t n = 5, dim = 96;
  std::vector<float> x = RandomFloats(n * dim, 4), out(n * dim);
  Weights w = MakeWeights(RandomFloats(dim, 5), DType::kBF16);
  ASSERT_OK(backend_->RmsNorm({TensorView::Of(x.data(), DType::kF32, {n, dim}), w.View({dim}),
                               TensorView::Of(out.data(), DType::kF32, {n, dim}), 1e-5f}));
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += double(x[i * dim + j]) * x[i * dim + j];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int64_t j = 0; j < dim; ++j) {
      EXPECT_NEAR(out[i * dim + j], x[i * dim + j] * inv * w.f32[j], 1e-5);
    }
  }
}

TEST_F(CpuOpsTest, EmbeddingGathersRowsAndMasksOtherShards) {
  const int64_t rows = 6, dim = 8;
  Weights table = MakeWeights(RandomFloats(rows * dim, 6), DType::kF16);
  std::vector<int32_t> ids = {10, 13, 3, 15, 16};  // shard holds ids [10, 16)
  std::vector<float> out(ids.size() * dim, 7.0f);
  ASSERT_OK(backend_->Embedding({TensorView::Of(ids.data(), DType::kI32, {5}), table.View({rows, dim}),
                                 TensorView::Of(out.data(), DType::kF32, {5, dim}), 10}));
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t local = ids[i] - 10;
    for (int64_t j = 0; j < dim; ++j) {
      const float want = (local >= 0 && local < rows) ? table.f32[local * dim + j] : 0.0f;
      EXPECT_EQ(out[i * dim + j], want) << i << "," << j;
    }
  }
}

TEST_F(CpuOpsTest, RopeRotatesHalvesByPositionTimesFrequency) {
  const int64_t n = 3, heads = 2, hd = 8;
  std::vector<float> x = RandomFloats(n * heads * hd, 7), orig = x;
  std::vector<int32_t> pos = {0, 5, 1000};
  std::vector<float> inv = {1.0f, 0.1f, 0.01f, 0.001f};
  ASSERT_OK(backend_->Rope({TensorView::Of(x.data(), DType::kF32, {n, heads, hd}),
                            TensorView::Of(pos.data(), DType::kI32, {n}),
                            TensorView::Of(inv.data(), DType::kF32, {hd / 2}), 1.0f}));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* o = orig.data() + (t * heads + h) * hd;
      const float* r = x.data() + (t * heads + h) * hd;
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = double(pos[t]) * inv[i];
        EXPECT_NEAR(r[i], o[i] * std::cos(a) - o[i + hd / 2] * std::sin(a), 2e-4);
        EXPECT_NEAR(r[i + hd / 2], o[i + hd / 2] * std::cos(a) + o[i] * std::sin(a), 2e-4);
      }
    }
  }
}

TEST_F(CpuOpsTest, SiluMulAndAdd) {
  std::vector<float> g = RandomFloats(40, 8), u = RandomFloats(40, 9), out(40), sum(40);
  ASSERT_OK(backend_->SiluMul({TensorView::Of(g.data(), DType::kF32, {4, 10}),
                               TensorView::Of(u.data(), DType::kF32, {4, 10}),
                               TensorView::Of(out.data(), DType::kF32, {4, 10})}));
  ASSERT_OK(backend_->Add({TensorView::Of(g.data(), DType::kF32, {40}),
                           TensorView::Of(u.data(), DType::kF32, {40}),
                           TensorView::Of(sum.data(), DType::kF32, {40})}));
  for (int i = 0; i < 40; ++i) {
    EXPECT_NEAR(out[i], g[i] / (1.0 + std::exp(-double(g[i]))) * u[i], 1e-6);
    EXPECT_EQ(sum[i], g[i] + u[i]);
  }
}

TEST_F(CpuOpsTest, GatherRowsCopiesRowsAndChecksIndices) {
  std::vector<uint16_t> in(5 * 3), out(4 * 3);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint16_t>(i);
  std::vector<int32_t> idx = {4, 0, 4, 2};
  const TensorView in_v = TensorView::Of(in.data(), DType::kBF16, {5, 3});
  ASSERT_OK(backend_->GatherRows({in_v, TensorView::Of(idx.data(), DType::kI32, {4}),
                                  TensorView::Of(out.data(), DType::kBF16, {4, 3})}));
  EXPECT_EQ(out, (std::vector<uint16_t>{12, 13, 14, 0, 1, 2, 12, 13, 14, 6, 7, 8}));
  idx[1] = 5;
  EXPECT_EQ(backend_->GatherRows({in_v, TensorView::Of(idx.data(), DType::kI32, {4}),
                                  TensorView::Of(out.data(), DType::kBF16, {4, 3})})
                .code(),
            absl::StatusCode::kOutOfRange);
  // Output overlapping the input, or of another dtype, is refused before the op runs.
  EXPECT_EQ(backend_->GatherRows({in_v, TensorView::Of(idx.data(), DType::kI32, {1}),
                                  TensorView::Of(in.data() + 3, DType::kBF16, {1, 3})})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->GatherRows({in_v, TensorView::Of(idx.data(), DType::kI32, {4}),
                                  TensorView::Of(out.data(), DType::kF16, {4, 3})})
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CpuOpsTest, CastRoundTrips) {
  std::vector<float> x = RandomFloats(33, 10), back(33);
  std::vector<uint16_t> h(33);
  ASSERT_OK(backend_->Cast({TensorView::Of(x.data(), DType::kF32, {33}),
                            TensorView::Of(h.data(), DType::kBF16, {33})}));
  ASSERT_OK(backend_->Cast({TensorView::Of(h.data(), DType::kBF16, {33}),
                            TensorView::Of(back.data(), DType::kF32, {33})}));
  for (int i = 0; i < 33; ++i) {
    EXPECT_EQ(h[i], FloatToBf16(x[i]));
    EXPECT_EQ(back[i], Bf16ToFloat(FloatToBf16(x[i])));
  }
}

TEST_F(CpuOpsTest, ArgMaxTopKAndSoftmaxStats) {
  const int64_t n = 3, v = 50;
  std::vector<float> logits = RandomFloats(n * v, 12, 3.0f);
  logits[1 * v + 7] = 100.0f;  // a tie in row 1: the lower index wins
  logits[1 * v + 30] = 100.0f;
  std::vector<float> values(n), top_values(n * 4), m(n), s(n), sx(n);
  std::vector<int32_t> idx(n), top_idx(n * 4);
  auto L = TensorView::Of(logits.data(), DType::kF32, {n, v});
  ASSERT_OK(backend_->ArgMax({L, TensorView::Of(values.data(), DType::kF32, {n}),
                              TensorView::Of(idx.data(), DType::kI32, {n}), 1000}));
  ASSERT_OK(backend_->TopK({L, TensorView::Of(top_values.data(), DType::kF32, {n, 4}),
                            TensorView::Of(top_idx.data(), DType::kI32, {n, 4}), 0}));
  ASSERT_OK(backend_->SoftmaxStats({L, TensorView::Of(m.data(), DType::kF32, {n}),
                                    TensorView::Of(s.data(), DType::kF32, {n}),
                                    TensorView::Of(sx.data(), DType::kF32, {n})}));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits.data() + i * v;
    std::vector<int32_t> order(v);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
    EXPECT_EQ(idx[i], order[0] + 1000);
    EXPECT_EQ(values[i], row[order[0]]);
    for (int r = 0; r < 4; ++r) EXPECT_EQ(top_idx[i * 4 + r], order[r]);
    // log-sum-exp and entropy from the stats equal the direct computation.
    double z = 0, ent = 0;
    for (int64_t j = 0; j < v; ++j) z += std::exp(double(row[j]));
    for (int64_t j = 0; j < v; ++j) {
      const double p = std::exp(double(row[j])) / z;
      ent -= p > 0 ? p * std::log(p) : 0.0;
    }
    EXPECT_NEAR(m[i] + std::log(s[i]), std::log(z), 1e-4);
    EXPECT_NEAR(std::log(s[i]) - sx[i] / s[i], ent, 1e-4);
  }
  EXPECT_EQ(idx[1], 1007);
}

}  // namespace
}  // namespace tessera
