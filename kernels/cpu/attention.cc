// Causal grouped-query attention over the KV cache, and the merge of partial attention states.
//
// Each (token, head) pair is independent: scores against the token's own sequence up to its
// position are computed into one row of scratch (never a seq x seq matrix), soft-maxed with the
// max subtracted, and used to weight the values. F16 / BF16 cache elements are widened to F32 as
// they are loaded into the vector lanes of the dot products and value updates.
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/attention_rows.h"
#include "kernels/cpu/simd.h"

namespace tessera {

namespace {

using cpu_attention::AddScaledRow;
using cpu_attention::Dot;

// DoAttention for a K/V cache of dtype kCache. Scores, softmax and the weighted sum are F32 in
// the same order for every dtype; with kCache = F32 this is the F32 kernel unchanged.
template <DType kCache>
void AttendAll(const AttentionArgs& a) {
  const int64_t n = a.q.dim(0), heads = a.q.dim(1), head_dim = a.q.dim(2);
  const int64_t max_seq = a.k_cache.dim(1), kv_heads = a.k_cache.dim(2);
  const int64_t group = heads / kv_heads;
  const int32_t* slots = a.slots.as<const int32_t>();
  const int32_t* entries = a.entries.as<const int32_t>();
  const int64_t kv_row = kv_heads * head_dim;  // elements per cached position
  constexpr int64_t kElementBytes = kCache == DType::kF32 ? 4 : 2;
  int64_t work = 0;  // multiply-adds, to decide whether threads pay off
  for (int64_t i = 0; i < n; ++i) work += (entries[i] + 1) * heads * head_dim * 2;
#pragma omp parallel if (work >= (1 << 18))
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 4)
    for (int64_t item = 0; item < n * heads; ++item) {
      const int64_t i = item / heads, h = item % heads, g = h / group;
      const int64_t len = entries[i] + 1;
      const float* q = a.q.as<const float>() + item * head_dim;
      const int64_t base = slots[i] * max_seq * kv_row + g * head_dim;  // element offset
      const char* k = static_cast<const char*>(a.k_cache.data) + base * kElementBytes;
      const char* v = static_cast<const char*>(a.v_cache.data) + base * kElementBytes;
      scores.resize(len);
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < len; ++j) {
        scores[j] = Dot<kCache>(q, k + j * kv_row * kElementBytes, head_dim) * a.scale;
        max_score = std::max(max_score, scores[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < len; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      float* out = a.out.as<float>() + item * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
      const float inv_sum = 1.0f / sum;
      for (int64_t j = 0; j < len; ++j) {
        const float p = scores[j] * inv_sum;
        AddScaledRow<kCache>(p, v + j * kv_row * kElementBytes, head_dim, out);
      }
      if (!a.lse.empty()) a.lse.as<float>()[item] = max_score + std::log(sum);
    }
  }
}

}  // namespace

absl::Status CpuBackend::DoAttention(const AttentionArgs& a) {
  const int64_t n = a.q.dim(0);
  const int64_t n_slots = a.k_cache.dim(0), max_seq = a.k_cache.dim(1);
  const int32_t* slots = a.slots.as<const int32_t>();
  const int32_t* entries = a.entries.as<const int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (slots[i] < 0 || slots[i] >= n_slots || entries[i] < 0 || entries[i] >= max_seq) {
      return absl::OutOfRangeError(absl::StrCat("Attention: token ", i, " slot ", slots[i],
                                                " entry ", entries[i],
                                                " is outside the cache"));
    }
  }
  if (a.variant.sparse() || a.variant.has_outputs()) {
    AttendSparse(a);
    return absl::OkStatus();
  }
  switch (a.k_cache.dtype) {
    case DType::kBF16:
      AttendAll<DType::kBF16>(a);
      break;
    case DType::kF16:
      AttendAll<DType::kF16>(a);
      break;
    default:
      AttendAll<DType::kF32>(a);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoMergeAttention(const MergeAttentionArgs& a) {
  const int64_t rows = a.out_a.dim(0) * a.out_a.dim(1), head_dim = a.out_a.dim(2);
  for (int64_t r = 0; r < rows; ++r) {
    const float la = a.lse_a.as<const float>()[r], lb = a.lse_b.as<const float>()[r];
    const float m = std::max(la, lb);
    // A side with no keys has lse -inf and weight 0.
    const float wa = std::isinf(la) && la < 0 ? 0.0f : std::exp(la - m);
    const float wb = std::isinf(lb) && lb < 0 ? 0.0f : std::exp(lb - m);
    const float total = wa + wb;
    const float* oa = a.out_a.as<const float>() + r * head_dim;
    const float* ob = a.out_b.as<const float>() + r * head_dim;
    float* out = a.out.as<float>() + r * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) out[d] = (wa * oa[d] + wb * ob[d]) / total;
    a.lse_out.as<float>()[r] = m + std::log(total);
  }
  return absl::OkStatus();
}

}  // namespace tessera
