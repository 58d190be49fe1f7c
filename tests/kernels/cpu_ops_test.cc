// Every CPU op against a plain double-precision loop written here from the op's definition.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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

// HOMER's significance: max over query heads of scale * q . k, with GQA groups (heads h and
// h + 1 share a KV head for heads = 2 kv_heads), against a double reference, for every cache
// dtype; only slot 1's first `count` keys are read.
TEST_F(CpuOpsTest, KeyScoresTakeTheMaxOverHeadsOfEachGroup) {
  for (const auto [heads, kv_heads] : {std::pair<int64_t, int64_t>{4, 4}, {8, 2}, {6, 1}}) {
    const int64_t n_slots = 2, max_seq = 37, head_dim = 24, count = 29;
    const std::vector<float> q = RandomFloats(heads * head_dim, 60);
    const std::vector<float> k = RandomFloats(n_slots * max_seq * kv_heads * head_dim, 61);
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      SCOPED_TRACE(::testing::Message() << heads << ":" << kv_heads << " " << DTypeName(dtype));
      const Weights cache = MakeWeights(k, dtype);
      std::vector<float> out(count, -1.0f);
      const float scale = 0.2f;
      ASSERT_OK(backend_->KeyScores({TensorView::Of(q.data(), DType::kF32, {heads, head_dim}),
                                     cache.View({n_slots, max_seq, kv_heads, head_dim}),
                                     TensorView::Of(out.data(), DType::kF32, {count}), 1, scale}));
      for (int64_t j = 0; j < count; ++j) {
        double best = -1e30;
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t g = h / (heads / kv_heads);
          double dot = 0;
          for (int64_t d = 0; d < head_dim; ++d) {
            dot += double(q[h * head_dim + d]) *
                   cache.f32[((max_seq + j) * kv_heads + g) * head_dim + d];
          }
          best = std::max(best, dot * scale);
        }
        EXPECT_NEAR(out[j], best, 1e-5 * (1 + std::abs(best))) << j;
      }
    }
  }
  std::vector<float> q(8), k(2 * 4 * 8), out(5);
  EXPECT_FALSE(backend_->KeyScores({TensorView::Of(q.data(), DType::kF32, {1, 8}),
                                    TensorView::Of(k.data(), DType::kF32, {2, 4, 1, 8}),
                                    TensorView::Of(out.data(), DType::kF32, {5}), 0, 1.0f})
                   .ok());  // more keys than a slot holds
}

TEST_F(CpuOpsTest, AverageRoundsOnceInTheOperandsDtype) {
  const std::vector<float> a = RandomFloats(301, 62), b = RandomFloats(301, 63);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const Weights wa = MakeWeights(a, dtype), wb = MakeWeights(b, dtype);
    Weights out = MakeWeights(std::vector<float>(301, 0.0f), dtype);
    ASSERT_OK(backend_->Average({wa.View({301}), wb.View({301}), out.View({301})}));
    for (int64_t i = 0; i < 301; ++i) {
      const float want = (wa.f32[i] + wb.f32[i]) * 0.5f;
      switch (dtype) {
        case DType::kF32:
          EXPECT_EQ(out.f32[i], want);
          break;
        case DType::kBF16:
          EXPECT_EQ(out.half[i], FloatToBf16(want));
          break;
        default:
          EXPECT_EQ(out.half[i], FloatToF16(want));
      }
    }
  }
  std::vector<float> x(4);
  std::vector<uint16_t> y(4);
  EXPECT_FALSE(backend_->Average({TensorView::Of(x.data(), DType::kF32, {4}),
                                  TensorView::Of(y.data(), DType::kBF16, {4}),
                                  TensorView::Of(x.data(), DType::kF32, {4})})
                   .ok());
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

// k = 0 (validation allows it): an empty sum, y = 0 or y unchanged, on every path (F32 sgemm,
// the half-precision GEMV and the widening sgemm); the row blocking once divided by k.
TEST_F(CpuOpsTest, GemmWithAnEmptyInnerDimension) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t m : {1, 9, 40}) {
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " m=" << m << " acc=" << accumulate);
        const int64_t n = 12;
        std::vector<float> x(1), w32(1);
        std::vector<uint16_t> w16(1);
        std::vector<float> y = RandomFloats(m * n, 30), y0 = y;
        const void* w = dtype == DType::kF32 ? static_cast<const void*>(w32.data()) : w16.data();
        ASSERT_OK(backend_->Gemm({TensorView::Of(x.data(), DType::kF32, {m, 0}),
                                  TensorView::Of(w, dtype, {n, 0}),
                                  TensorView::Of(y.data(), DType::kF32, {m, n}), accumulate}));
        EXPECT_EQ(y, accumulate ? y0 : std::vector<float>(m * n, 0.0f));
      }
    }
  }
}

uint32_t BitsOf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Every NaN, whatever its payload, sign or quietness, becomes the output dtype's canonical quiet
// NaN with its sign (the CUDA backend writes the same bits).
TEST_F(CpuOpsTest, CastWritesCanonicalNans) {
  const std::vector<uint32_t> nans = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fa5a5a5u,
                                      0xff812345u, 0x7fffffffu};
  std::vector<float> in;
  for (uint32_t b : nans) in.push_back(FromBits(b));
  const int64_t count = static_cast<int64_t>(in.size());
  std::vector<uint16_t> bf16(count), f16(count);
  std::vector<float> f32(count);
  ASSERT_OK(backend_->Cast({TensorView::Of(in.data(), DType::kF32, {count}),
                            TensorView::Of(bf16.data(), DType::kBF16, {count})}));
  ASSERT_OK(backend_->Cast({TensorView::Of(in.data(), DType::kF32, {count}),
                            TensorView::Of(f16.data(), DType::kF16, {count})}));
  ASSERT_OK(backend_->Cast({TensorView::Of(in.data(), DType::kF32, {count}),
                            TensorView::Of(f32.data(), DType::kF32, {count})}));
  for (int64_t i = 0; i < count; ++i) {
    const bool negative = (nans[i] >> 31) != 0;
    SCOPED_TRACE(::testing::Message() << std::hex << nans[i]);
    EXPECT_EQ(bf16[i], negative ? 0xffc0 : 0x7fc0);
    EXPECT_EQ(f16[i], negative ? 0xfe00 : 0x7e00);
    EXPECT_EQ(BitsOf(f32[i]), negative ? 0xffc00000u : 0x7fc00000u);
  }
  // Half NaNs with payloads widen to the canonical F32 NaN too.
  std::vector<uint16_t> half_nans = {0x7c01, 0xfd55, 0x7fff};
  std::vector<float> widened(3);
  ASSERT_OK(backend_->Cast({TensorView::Of(half_nans.data(), DType::kF16, {3}),
                            TensorView::Of(widened.data(), DType::kF32, {3})}));
  EXPECT_EQ(BitsOf(widened[0]), 0x7fc00000u);
  EXPECT_EQ(BitsOf(widened[1]), 0xffc00000u);
  EXPECT_EQ(BitsOf(widened[2]), 0x7fc00000u);
}

// NaN ranks after every number (-inf included), NaNs in index order: a row with fewer than k
// numbers still yields k valid, distinct indices, and ArgMax ignores NaN where it can.
TEST_F(CpuOpsTest, TopKAndArgMaxRankNanLast) {
  const float nan = std::nanf("");
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> logits = {nan, 2.0f, -inf, nan, 5.0f, nan, 2.0f, -0.0f,  // row 0
                               nan, nan,  nan,  nan, nan,  nan, nan,  nan};   // row 1: all NaN
  const int64_t n = 2, v = 8, k = 7;
  std::vector<float> values(n * k), best(n);
  std::vector<int32_t> idx(n * k), best_idx(n);
  const TensorView L = TensorView::Of(logits.data(), DType::kF32, {n, v});
  ASSERT_OK(backend_->TopK({L, TensorView::Of(values.data(), DType::kF32, {n, k}),
                            TensorView::Of(idx.data(), DType::kI32, {n, k}), 100}));
  ASSERT_OK(backend_->ArgMax({L, TensorView::Of(best.data(), DType::kF32, {n}),
                              TensorView::Of(best_idx.data(), DType::kI32, {n}), 100}));
  EXPECT_EQ(std::vector<int32_t>(idx.begin(), idx.begin() + k),
            (std::vector<int32_t>{104, 101, 106, 107, 102, 100, 103}));
  EXPECT_EQ(std::vector<int32_t>(idx.begin() + k, idx.end()),
            (std::vector<int32_t>{100, 101, 102, 103, 104, 105, 106}));
  EXPECT_EQ(values[0], 5.0f);
  EXPECT_TRUE(std::isnan(values[5]));
  EXPECT_EQ(best_idx, (std::vector<int32_t>{104, 100}));
  EXPECT_EQ(best[0], 5.0f);
}

// Rows padded with -inf (a short vocabulary shard, a masked vocabulary): the statistics are
// finite and equal the direct computation over the finite entries; an all -inf row gives
// m = -inf, S = E = 0.
TEST_F(CpuOpsTest, SoftmaxStatsOfRowsPaddedWithMinusInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t n = 4, v = 6;
  std::vector<float> logits = {1.5f, -2.0f, 0.25f, -inf, -inf, -inf,   // trailing padding
                               -inf, -inf,  3.0f,  -inf, 0.0f, -inf,   // scattered
                               -inf, -inf,  -inf,  -inf, -inf, -inf,   // nothing
                               -inf, 80.0f, -inf,  -inf, -inf, -inf};  // one entry
  std::vector<float> m(n), s(n), sx(n);
  ASSERT_OK(backend_->SoftmaxStats({TensorView::Of(logits.data(), DType::kF32, {n, v}),
                                    TensorView::Of(m.data(), DType::kF32, {n}),
                                    TensorView::Of(s.data(), DType::kF32, {n}),
                                    TensorView::Of(sx.data(), DType::kF32, {n})}));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits.data() + i * v;
    double mx = -inf, sum = 0, shifted = 0;
    for (int64_t j = 0; j < v; ++j) mx = std::max<double>(mx, row[j]);
    for (int64_t j = 0; j < v; ++j) {
      if (row[j] == -inf) continue;
      sum += std::exp(row[j] - mx);
      shifted += (row[j] - mx) * std::exp(row[j] - mx);
    }
    SCOPED_TRACE(i);
    EXPECT_EQ(m[i], static_cast<float>(mx));
    EXPECT_FLOAT_EQ(s[i], static_cast<float>(sum));
    EXPECT_FLOAT_EQ(sx[i], static_cast<float>(shifted));
    EXPECT_FALSE(std::isnan(s[i]) || std::isnan(sx[i]));
  }
}

}  // namespace
}  // namespace tessera
