// Causal grouped-query attention over the KV cache, and the merge of partial attention states.
//
// Each (token, KV head) pair is independent: the scores of the query heads that share the KV
// head against the token's own sequence up to its position are computed into rows of scratch
// (never a seq x seq matrix), soft-maxed with the max subtracted, and used to weight the values;
// each K / V row is read once per group, not once per query head. F16 / BF16 cache elements are widened to F32 as
// they are loaded into the vector lanes of the dot products and value updates.
#include <omp.h>

#include <algorithm>
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

// A key split's contribution to one (token, KV head) pair: for every query head of the group,
// the max scaled score, the sum of exp(score - max), and out = sum exp(score - max) v (not yet
// divided by the sum).
struct Partial {
  std::vector<float> max, sum, out;  // [group], [group], [group, head_dim]
};

// The group of query heads that share KV head g of token i, against keys [begin, end) of the
// token's sequence. Each K and V row is loaded once for all the group's heads. Per head the
// arithmetic is the single-pass kernel's, in the same order: with the whole sequence
// (normalize = true) the output and lse are written exactly as one pass over the keys gives them;
// otherwise the unnormalized partial state goes to `partial`.
template <DType kCache>
void AttendGroup(const AttentionArgs& a, int64_t i, int64_t g, int64_t begin, int64_t end,
                 bool normalize, std::vector<float>* scores, Partial* partial) {
  const int64_t heads = a.q.dim(1), head_dim = a.q.dim(2);
  const int64_t max_seq = a.k_cache.dim(1), kv_heads = a.k_cache.dim(2);
  const int64_t group = heads / kv_heads, len = end - begin;
  const int64_t kv_row = kv_heads * head_dim;  // elements per cached position
  constexpr int64_t kElementBytes = kCache == DType::kF32 ? 4 : 2;
  const int64_t base = (a.slots.as<const int32_t>()[i] * max_seq + begin) * kv_row + g * head_dim;
  const char* k = static_cast<const char*>(a.k_cache.data) + base * kElementBytes;
  const char* v = static_cast<const char*>(a.v_cache.data) + base * kElementBytes;
  const float* q = a.q.as<const float>() + (i * heads + g * group) * head_dim;
  scores->resize(group * len);
  float* sc = scores->data();
  for (int64_t j = 0; j < len; ++j) {
    const char* kj = k + j * kv_row * kElementBytes;
    for (int64_t h = 0; h < group; ++h) sc[h * len + j] = Dot<kCache>(q + h * head_dim, kj, head_dim) * a.scale;
  }
  partial->max.assign(group, -std::numeric_limits<float>::infinity());
  partial->sum.assign(group, 0.0f);
  for (int64_t h = 0; h < group; ++h) {
    float* row = sc + h * len;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < len; ++j) m = std::max(m, row[j]);
    float sum = 0.0f;
    for (int64_t j = 0; j < len; ++j) {
      row[j] = std::exp(row[j] - m);
      sum += row[j];
    }
    if (normalize) {
      const float inv_sum = 1.0f / sum;
      for (int64_t j = 0; j < len; ++j) row[j] *= inv_sum;
    }
    partial->max[h] = m;
    partial->sum[h] = sum;
  }
  float* out = normalize ? a.out.as<float>() + (i * heads + g * group) * head_dim
                         : (partial->out.resize(group * head_dim), partial->out.data());
  std::fill_n(out, group * head_dim, 0.0f);
  for (int64_t j = 0; j < len; ++j) {
    const char* vj = v + j * kv_row * kElementBytes;
    for (int64_t h = 0; h < group; ++h) AddScaledRow<kCache>(sc[h * len + j], vj, head_dim, out + h * head_dim);
  }
  if (normalize && !a.lse.empty()) {
    for (int64_t h = 0; h < group; ++h) {
      a.lse.as<float>()[i * heads + g * group + h] = partial->max[h] + std::log(partial->sum[h]);
    }
  }
}

// Keys per split at least: below this the merge costs more than the second core gives.
constexpr int64_t kMinSplitKeys = 1024;

// Combines the splits of one (token, KV head) pair into the normalized output and lse.
void MergeSplits(const AttentionArgs& a, int64_t i, int64_t g, const Partial* splits, int64_t count) {
  const int64_t heads = a.q.dim(1), head_dim = a.q.dim(2), group = heads / a.k_cache.dim(2);
  for (int64_t h = 0; h < group; ++h) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s < count; ++s) m = std::max(m, splits[s].max[h]);
    float total = 0.0f;
    float* out = a.out.as<float>() + (i * heads + g * group + h) * head_dim;
    std::fill_n(out, head_dim, 0.0f);
    for (int64_t s = 0; s < count; ++s) {
      const float w = std::exp(splits[s].max[h] - m);
      total += w * splits[s].sum[h];
      const float* o = splits[s].out.data() + h * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) out[d] += w * o[d];
    }
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < head_dim; ++d) out[d] *= inv;
    if (!a.lse.empty()) a.lse.as<float>()[i * heads + g * group + h] = m + std::log(total);
  }
}

// DoAttention for a K/V cache of dtype kCache. Work items are (token, KV head) pairs; when there
// are fewer of them than twice the threads and a sequence is long, its keys are split too
// (at least kMinSplitKeys per split) and the splits merged, so long-context decode uses every
// core. Without a split the result is the single-pass kernel's, bit for bit.
template <DType kCache>
void AttendAll(const AttentionArgs& a) {
  const int64_t n = a.q.dim(0), heads = a.q.dim(1), head_dim = a.q.dim(2);
  const int64_t kv_heads = a.k_cache.dim(2);
  const int32_t* entries = a.entries.as<const int32_t>();
  int64_t work = 0;  // multiply-adds, to decide whether threads pay off
  for (int64_t i = 0; i < n; ++i) work += (entries[i] + 1) * heads * head_dim * 2;
  const int64_t threads = omp_get_max_threads(), pairs = n * kv_heads;
  int64_t max_splits = 1;
  if (threads > 1 && pairs < 2 * threads) max_splits = (2 * threads + pairs - 1) / pairs;
  // Split counts per token and the first item of each token.
  std::vector<int64_t> splits(n), first(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    splits[i] = std::max<int64_t>(1, std::min(max_splits, (entries[i] + 1) / kMinSplitKeys));
    first[i + 1] = first[i] + splits[i] * kv_heads;
  }
  const bool any_split = first[n] > pairs;
  std::vector<Partial> partials(any_split ? first[n] : 0);
#pragma omp parallel if (work >= (1 << 18))
  {
    std::vector<float> scores;
    Partial unsplit;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < first[n]; ++item) {
      const int64_t i = std::upper_bound(first.begin(), first.end(), item) - first.begin() - 1;
      const int64_t local = item - first[i], g = local / splits[i], s = local % splits[i];
      const int64_t len = entries[i] + 1;
      const int64_t begin = len * s / splits[i], end = len * (s + 1) / splits[i];
      AttendGroup<kCache>(a, i, g, begin, end, splits[i] == 1, &scores,
                          splits[i] == 1 ? &unsplit : &partials[item]);
    }
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < pairs; ++pair) {
      const int64_t i = pair / kv_heads, g = pair % kv_heads;
      if (any_split && splits[i] > 1) MergeSplits(a, i, g, &partials[first[i] + g * splits[i]], splits[i]);
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
