// Attention (F32, F16 and BF16 caches), KV writes and partial-state merging against a naive
// softmax(q k^T) v in double precision.
#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::RandomFloats;
using testing::RelativeError;

struct AttnCase {
  int64_t heads, kv_heads, head_dim;
  std::vector<int32_t> positions;  // one query per entry
  std::vector<int32_t> slots;
};

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

// Reference: for query token i and head h, keys 0..positions[i] of slot slots[i], KV head
// h / (heads / kv_heads), softmax in double.
void NaiveAttention(const AttnCase& p, int64_t max_seq, const std::vector<float>& q,
                    const std::vector<float>& k, const std::vector<float>& v, float scale,
                    std::vector<float>* out, std::vector<float>* lse) {
  const int64_t n = p.positions.size(), hd = p.head_dim, group = p.heads / p.kv_heads;
  out->assign(n * p.heads * hd, 0.0f);
  lse->assign(n * p.heads, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t g = h / group, len = p.positions[i] + 1;
      std::vector<double> s(len);
      double mx = -1e300;
      for (int64_t j = 0; j < len; ++j) {
        const float* kj = k.data() + ((p.slots[i] * max_seq + j) * p.kv_heads + g) * hd;
        double d = 0;
        for (int64_t t = 0; t < hd; ++t) d += double(q[(i * p.heads + h) * hd + t]) * kj[t];
        s[j] = d * scale;
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (double& x : s) z += (x = std::exp(x - mx));
      for (int64_t j = 0; j < len; ++j) {
        const float* vj = v.data() + ((p.slots[i] * max_seq + j) * p.kv_heads + g) * hd;
        for (int64_t t = 0; t < hd; ++t) (*out)[(i * p.heads + h) * hd + t] += s[j] / z * vj[t];
      }
      (*lse)[i * p.heads + h] = static_cast<float>(mx + std::log(z));
    }
  }
}

TEST_P(AttentionTest, MatchesNaiveSoftmax) {
  const AttnCase p = GetParam();
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t n = p.positions.size(), max_seq = 300, n_slots = 3;
  const int64_t cache_size = n_slots * max_seq * p.kv_heads * p.head_dim;
  std::vector<float> k = RandomFloats(cache_size, 21), v = RandomFloats(cache_size, 22);
  std::vector<float> q = RandomFloats(n * p.heads * p.head_dim, 23);
  std::vector<float> out(q.size(), NAN), lse(n * p.heads, NAN);  // poisoned: unwritten fails
  const float scale = 1.0f / std::sqrt(float(p.head_dim));
  AttentionArgs a{TensorView::Of(q.data(), DType::kF32, {n, p.heads, p.head_dim}),
                  TensorView::Of(k.data(), DType::kF32, {n_slots, max_seq, p.kv_heads, p.head_dim}),
                  TensorView::Of(v.data(), DType::kF32, {n_slots, max_seq, p.kv_heads, p.head_dim}),
                  TensorView::Of(p.slots.data(), DType::kI32, {n}),
                  TensorView::Of(p.positions.data(), DType::kI32, {n}),
                  TensorView::Of(out.data(), DType::kF32, {n, p.heads, p.head_dim}),
                  TensorView::Of(lse.data(), DType::kF32, {n, p.heads}),
                  scale};
  ASSERT_OK(backend->Attention(a));
  std::vector<float> ref_out, ref_lse;
  NaiveAttention(p, max_seq, q, k, v, scale, &ref_out, &ref_lse);
  EXPECT_LT(RelativeError(out.data(), ref_out.data(), out.size()), 1e-5);
  EXPECT_LT(RelativeError(lse.data(), ref_lse.data(), lse.size()), 1e-5);
}

const auto kAttnCases =
    ::testing::Values(AttnCase{4, 4, 64, {0}, {0}},                    // MHA, sequence 1
                      AttnCase{8, 1, 128, {0, 1, 2, 3, 4, 5, 6}, {1, 1, 1, 1, 1, 1, 1}},  // 8:1 prefill
                      AttnCase{16, 2, 64, {299, 17, 130}, {0, 2, 1}},  // decode, ragged, long
                      AttnCase{6, 3, 10, {4, 0, 9, 2, 1}, {2, 0, 2, 1, 0}});
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest, kAttnCases);

// Long sequences with fewer (token, KV head) pairs than twice the threads: the kernel splits
// the keys over the cores (at least 1024 per split) and merges the partial softmax states.
TEST(LongAttentionTest, KeysSplitOverThreadsMatchNaiveSoftmax) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int threads_before = CpuBackend::threads();
  CpuBackend::SetThreads(2);
  for (const AttnCase& p : {AttnCase{8, 1, 64, {4999}, {1}},             // 1 pair: 4 splits
                            AttnCase{4, 2, 32, {2047, 3}, {0, 1}},       // 2 long splits + short
                            AttnCase{16, 2, 64, {3100, 1023}, {1, 0}}}) {  // 4 pairs: none
    SCOPED_TRACE(::testing::Message() << "heads " << p.heads << "/" << p.kv_heads << " len "
                                      << p.positions[0] + 1);
    const int64_t n = p.positions.size(), max_seq = 5000, n_slots = 2;
    const int64_t cache_size = n_slots * max_seq * p.kv_heads * p.head_dim;
    std::vector<float> k = RandomFloats(cache_size, 31), v = RandomFloats(cache_size, 32);
    std::vector<float> q = RandomFloats(n * p.heads * p.head_dim, 33, 3.0f);  // peaked softmax
    std::vector<float> out(q.size(), NAN), lse(n * p.heads, NAN);
    const float scale = 1.0f / std::sqrt(float(p.head_dim));
    ASSERT_OK(backend->Attention(
        {TensorView::Of(q.data(), DType::kF32, {n, p.heads, p.head_dim}),
         TensorView::Of(k.data(), DType::kF32, {n_slots, max_seq, p.kv_heads, p.head_dim}),
         TensorView::Of(v.data(), DType::kF32, {n_slots, max_seq, p.kv_heads, p.head_dim}),
         TensorView::Of(p.slots.data(), DType::kI32, {n}),
         TensorView::Of(p.positions.data(), DType::kI32, {n}),
         TensorView::Of(out.data(), DType::kF32, {n, p.heads, p.head_dim}),
         TensorView::Of(lse.data(), DType::kF32, {n, p.heads}), scale}));
    std::vector<float> ref_out, ref_lse;
    NaiveAttention(p, max_seq, q, k, v, scale, &ref_out, &ref_lse);
    EXPECT_LT(RelativeError(out.data(), ref_out.data(), out.size()), 1e-5);
    EXPECT_LT(RelativeError(lse.data(), ref_lse.data(), lse.size()), 1e-5);
  }
  CpuBackend::SetThreads(threads_before);
}

// `values` rounded to `dtype` (F16 or BF16, nearest even), as 16-bit words and widened back.
std::vector<uint16_t> Round(const std::vector<float>& values, DType dtype,
                            std::vector<float>* widened) {
  std::vector<uint16_t> words(values.size());
  widened->resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    words[i] = dtype == DType::kBF16 ? FloatToBf16(values[i]) : FloatToF16(values[i]);
    (*widened)[i] = dtype == DType::kBF16 ? Bf16ToFloat(words[i]) : F16ToFloat(words[i]);
  }
  return words;
}

class HalfCacheAttentionTest
    : public ::testing::TestWithParam<std::tuple<AttnCase, DType>> {};

// An F16 / BF16 cache against the double-precision softmax of the rounded (stored) values: the
// rounding of K and V is then no error at all, and what remains is the F32 arithmetic, whose
// bound (1e-5 relative) is the F32 cache's above. The same bound holds against attention over an
// F32 cache holding the widened values (the kernels differ only in how the compiler fuses a few
// multiply-adds); that difference is printed too.
TEST_P(HalfCacheAttentionTest, MatchesDoubleSoftmaxOfTheStoredValues) {
  const auto& [p, dtype] = GetParam();
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t n = p.positions.size(), max_seq = 300, n_slots = 3;
  const int64_t cache_size = n_slots * max_seq * p.kv_heads * p.head_dim;
  std::vector<float> k_wide, v_wide;
  std::vector<uint16_t> k = Round(RandomFloats(cache_size, 21), dtype, &k_wide);
  std::vector<uint16_t> v = Round(RandomFloats(cache_size, 22), dtype, &v_wide);
  std::vector<float> q = RandomFloats(n * p.heads * p.head_dim, 23);
  const float scale = 1.0f / std::sqrt(float(p.head_dim));
  auto run = [&](void* kc, void* vc, DType cache_type, std::vector<float>* out,
                 std::vector<float>* lse) {
    out->assign(q.size(), NAN);  // poisoned: unwritten fails
    lse->assign(n * p.heads, NAN);
    return backend->Attention({TensorView::Of(q.data(), DType::kF32, {n, p.heads, p.head_dim}),
                               TensorView::Of(kc, cache_type, {n_slots, max_seq, p.kv_heads,
                                                               p.head_dim}),
                               TensorView::Of(vc, cache_type, {n_slots, max_seq, p.kv_heads,
                                                               p.head_dim}),
                               TensorView::Of(p.slots.data(), DType::kI32, {n}),
                               TensorView::Of(p.positions.data(), DType::kI32, {n}),
                               TensorView::Of(out->data(), DType::kF32, {n, p.heads, p.head_dim}),
                               TensorView::Of(lse->data(), DType::kF32, {n, p.heads}), scale});
  };
  std::vector<float> out, lse, wide_out, wide_lse;
  ASSERT_OK(run(k.data(), v.data(), dtype, &out, &lse));
  ASSERT_OK(run(k_wide.data(), v_wide.data(), DType::kF32, &wide_out, &wide_lse));
  std::vector<float> ref_out, ref_lse;
  NaiveAttention(p, max_seq, q, k_wide, v_wide, scale, &ref_out, &ref_lse);
  const double out_error = RelativeError(out.data(), ref_out.data(), out.size());
  const double lse_error = RelativeError(lse.data(), ref_lse.data(), lse.size());
  const double vs_f32 = RelativeError(out.data(), wide_out.data(), out.size());
  std::printf("[half-cache attention] %s heads %lld/%lld hd %lld: relative error out %.2e, "
              "lse %.2e (bound 1e-5); vs the F32 cache of the same values %.2e\n",
              std::string(DTypeName(dtype)).c_str(), static_cast<long long>(p.heads),
              static_cast<long long>(p.kv_heads), static_cast<long long>(p.head_dim), out_error,
              lse_error, vs_f32);
  EXPECT_LT(out_error, 1e-5);
  EXPECT_LT(lse_error, 1e-5);
  EXPECT_LT(vs_f32, 1e-5);
  EXPECT_LT(RelativeError(lse.data(), wide_lse.data(), lse.size()), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, HalfCacheAttentionTest,
                         ::testing::Combine(kAttnCases,
                                            ::testing::Values(DType::kBF16, DType::kF16)));

// KvWrite into F16 / BF16 caches rounds each element to nearest even, ties to the even
// neighbour, and then attention reads back exactly the stored values.
TEST(KvWriteTest, RoundsToNearestEvenIntoHalfCaches) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t slots = 2, max_seq = 3, kvh = 1, hd = 4, n = 2;
  for (const DType dtype : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    // Mantissa bits kept: BF16 7, F16 10; u = one unit in the last place at 1.0.
    const float u = dtype == DType::kBF16 ? 0x1p-7f : 0x1p-10f;
    // 1 + u/2 is a tie between 1 (even) and 1 + u (odd): 1. 1 + 3u/2 is a tie between 1 + u
    // (odd) and 1 + 2u (even): 1 + 2u. 1 + u/4 rounds down, 1 + 3u/4 up.
    std::vector<float> k = {1 + u / 2, 1 + 1.5f * u, 1 + u / 4, 1 + 0.75f * u,
                            -3.1415926f, 1e-3f, 65504.0f, 0.0f};
    std::vector<float> v(k.size());
    for (size_t i = 0; i < k.size(); ++i) v[i] = -2 * k[i];
    const std::vector<float> want_k_head = {1, 1 + 2 * u, 1, 1 + u};
    std::vector<uint16_t> kc(slots * max_seq * kvh * hd, 0), vc = kc;
    std::vector<int32_t> sl = {1, 0}, pos = {2, 0};
    ASSERT_OK(backend->KvWrite({TensorView::Of(k.data(), DType::kF32, {n, kvh, hd}),
                                TensorView::Of(v.data(), DType::kF32, {n, kvh, hd}),
                                TensorView::Of(kc.data(), dtype, {slots, max_seq, kvh, hd}),
                                TensorView::Of(vc.data(), dtype, {slots, max_seq, kvh, hd}),
                                TensorView::Of(sl.data(), DType::kI32, {n}),
                                TensorView::Of(pos.data(), DType::kI32, {n})}));
    auto widen = [&](uint16_t w) { return dtype == DType::kBF16 ? Bf16ToFloat(w) : F16ToFloat(w); };
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t e = 0; e < hd; ++e) {
        const int64_t cell = (sl[i] * max_seq + pos[i]) * hd + e;
        const uint16_t want_k = dtype == DType::kBF16 ? FloatToBf16(k[i * hd + e])
                                                       : FloatToF16(k[i * hd + e]);
        const uint16_t want_v = dtype == DType::kBF16 ? FloatToBf16(v[i * hd + e])
                                                       : FloatToF16(v[i * hd + e]);
        EXPECT_EQ(kc[cell], want_k) << "token " << i << " element " << e;
        EXPECT_EQ(vc[cell], want_v) << "token " << i << " element " << e;
        if (i == 0) {
          EXPECT_EQ(widen(kc[cell]), want_k_head[e]) << "element " << e;
        }
      }
    }
    EXPECT_EQ(kc[(0 * max_seq + 1) * hd], 0u);  // slot 0, entry 1: not written
  }
}

TEST(KvWriteTest, WritesRowsAtSlotAndPosition) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t slots = 2, max_seq = 5, kvh = 2, hd = 4;
  std::vector<float> kc(slots * max_seq * kvh * hd, 0.0f), vc = kc;
  std::vector<float> k = RandomFloats(3 * kvh * hd, 30), v = RandomFloats(3 * kvh * hd, 31);
  std::vector<int32_t> sl = {1, 0, 1}, pos = {4, 0, 2};
  ASSERT_OK(backend->KvWrite({TensorView::Of(k.data(), DType::kF32, {3, kvh, hd}),
                              TensorView::Of(v.data(), DType::kF32, {3, kvh, hd}),
                              TensorView::Of(kc.data(), DType::kF32, {slots, max_seq, kvh, hd}),
                              TensorView::Of(vc.data(), DType::kF32, {slots, max_seq, kvh, hd}),
                              TensorView::Of(sl.data(), DType::kI32, {3}),
                              TensorView::Of(pos.data(), DType::kI32, {3})}));
  for (int i = 0; i < 3; ++i) {
    for (int e = 0; e < kvh * hd; ++e) {
      EXPECT_EQ(kc[(sl[i] * max_seq + pos[i]) * kvh * hd + e], k[i * kvh * hd + e]);
      EXPECT_EQ(vc[(sl[i] * max_seq + pos[i]) * kvh * hd + e], v[i * kvh * hd + e]);
    }
  }
  std::vector<int32_t> bad_pos = {5, 0, 0};
  EXPECT_FALSE(backend->KvWrite({TensorView::Of(k.data(), DType::kF32, {3, kvh, hd}),
                                 TensorView::Of(v.data(), DType::kF32, {3, kvh, hd}),
                                 TensorView::Of(kc.data(), DType::kF32, {slots, max_seq, kvh, hd}),
                                 TensorView::Of(vc.data(), DType::kF32, {slots, max_seq, kvh, hd}),
                                 TensorView::Of(sl.data(), DType::kI32, {3}),
                                 TensorView::Of(bad_pos.data(), DType::kI32, {3})})
                   .ok());
}

// Attention over keys [0, a) and [a, a + b) separately, merged, equals attention over all keys.
TEST(MergeAttentionTest, MergedPartialsEqualFullAttention) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t heads = 4, kvh = 2, hd = 16, a = 7, b = 12;
  std::vector<float> keys = RandomFloats((a + b) * kvh * hd, 40), vals = RandomFloats((a + b) * kvh * hd, 41);
  std::vector<float> q = RandomFloats(heads * hd, 42);
  auto run = [&](int64_t begin, int64_t len, std::vector<float>* out, std::vector<float>* lse) {
    std::vector<float> kc(keys.begin() + begin * kvh * hd, keys.begin() + (begin + len) * kvh * hd);
    std::vector<float> vc(vals.begin() + begin * kvh * hd, vals.begin() + (begin + len) * kvh * hd);
    std::vector<int32_t> slot = {0}, pos = {static_cast<int32_t>(len - 1)};
    out->assign(heads * hd, 0.0f);
    lse->assign(heads, 0.0f);
    ASSERT_OK(backend->Attention({TensorView::Of(q.data(), DType::kF32, {1, heads, hd}),
                                  TensorView::Of(kc.data(), DType::kF32, {1, len, kvh, hd}),
                                  TensorView::Of(vc.data(), DType::kF32, {1, len, kvh, hd}),
                                  TensorView::Of(slot.data(), DType::kI32, {1}),
                                  TensorView::Of(pos.data(), DType::kI32, {1}),
                                  TensorView::Of(out->data(), DType::kF32, {1, heads, hd}),
                                  TensorView::Of(lse->data(), DType::kF32, {1, heads}), 0.25f}));
  };
  std::vector<float> oa, la, ob, lb, full, lfull;
  run(0, a, &oa, &la);
  run(a, b, &ob, &lb);
  run(0, a + b, &full, &lfull);
  std::vector<float> merged(heads * hd), lmerged(heads);
  ASSERT_OK(backend->MergeAttention({TensorView::Of(oa.data(), DType::kF32, {1, heads, hd}),
                                     TensorView::Of(la.data(), DType::kF32, {1, heads}),
                                     TensorView::Of(ob.data(), DType::kF32, {1, heads, hd}),
                                     TensorView::Of(lb.data(), DType::kF32, {1, heads}),
                                     TensorView::Of(merged.data(), DType::kF32, {1, heads, hd}),
                                     TensorView::Of(lmerged.data(), DType::kF32, {1, heads})}));
  EXPECT_LT(RelativeError(merged.data(), full.data(), full.size()), 1e-6);
  EXPECT_LT(RelativeError(lmerged.data(), lfull.data(), lfull.size()), 1e-6);
}

}  // namespace
}  // namespace tessera
