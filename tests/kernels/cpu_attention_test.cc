// Attention, KV writes and partial-state merging against a naive softmax(q k^T) v.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
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

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(AttnCase{4, 4, 64, {0}, {0}},                    // MHA, sequence 1
                      AttnCase{8, 1, 128, {0, 1, 2, 3, 4, 5, 6}, {1, 1, 1, 1, 1, 1, 1}},  // 8:1 prefill
                      AttnCase{16, 2, 64, {299, 17, 130}, {0, 2, 1}},  // decode, ragged, long
                      AttnCase{6, 3, 10, {4, 0, 9, 2, 1}, {2, 0, 2, 1, 0}}));

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
