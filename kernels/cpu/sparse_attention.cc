// The CPU reference kernel of the sparse attention variants (shared/specs/top_theta.md §7.4):
// Top-theta and Top-k, pre- or post-softmax, the softmax denominator compensations, V-mean
// compensation, and the counters and calibration outputs of AttentionVariant.
//
// Work items are (token, KV head): the group's query heads run one after another so that the
// union of their kept keys (the V rows a gathering kernel would read) is counted per item. A row
// that keeps every key takes exactly the arithmetic of the dense kernel (attention.cc), so it is
// bit-identical to kCausal.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_rows.h"
#include "kernels/op_args.h"

namespace tessera {
namespace {

using cpu_attention::AddScaledRow;
using cpu_attention::Dot;
using V = AttentionVariant;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// keep[j] = 1 for the `k` largest scores of `a` (k < a.size()): every score above the k-th
// largest value, then the ties equal to it from the largest index down until there are k.
void TopKMask(const std::vector<float>& a, int64_t k, std::vector<float>& scratch,
              std::vector<uint8_t>& keep) {
  const int64_t len = static_cast<int64_t>(a.size());
  scratch.assign(a.begin(), a.end());
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<>());
  const float kth = scratch[k - 1];
  keep.assign(len, 0);
  int64_t count = 0;
  for (int64_t j = 0; j < len; ++j) {
    if (a[j] > kth) {
      keep[j] = 1;
      ++count;
    }
  }
  for (int64_t j = len - 1; j >= 0 && count < k; --j) {
    if (!keep[j] && a[j] == kth) {
      keep[j] = 1;
      ++count;
    }
  }
}

// Column of the bin of a row of n keys in a [heads, bins] table starting at bin_begin.
int64_t BinOf(const V& var, const TensorView& table, int64_t n) {
  const int64_t bins = table.dim(1);
  return std::clamp<int64_t>(n, var.bin_begin, var.bin_begin + bins - 1) - var.bin_begin;
}

// Per-thread buffers of one work item.
struct RowScratch {
  std::vector<float> scores;  // a_j, then e_j
  std::vector<float> sorted;
  std::vector<uint8_t> keep, topk_keep, needed;
  std::vector<float> vbar;
};

template <DType kCache>
void AttendSparseAll(const AttentionArgs& a) {
  const V& var = a.variant;
  const int64_t n = a.q.dim(0), heads = a.q.dim(1), head_dim = a.q.dim(2);
  const int64_t max_seq = a.k_cache.dim(1), kv_heads = a.k_cache.dim(2);
  const int64_t group = heads / kv_heads;
  const int32_t* slots = a.slots.as<const int32_t>();
  const int32_t* entries = a.entries.as<const int32_t>();
  const int64_t kv_row = kv_heads * head_dim;
  constexpr int64_t kElementBytes = kCache == DType::kF32 ? 4 : 2;
  const bool post = var.placement == V::Placement::kPostSoftmax;
  int64_t work = 0;
  for (int64_t i = 0; i < n; ++i) work += (entries[i] + 1) * heads * head_dim * 2;
#pragma omp parallel if (work >= (1 << 18))
  {
    RowScratch s;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n * kv_heads; ++item) {
      const int64_t i = item / kv_heads, g = item % kv_heads;
      const int64_t len = entries[i] + 1;
      const int64_t base = slots[i] * max_seq * kv_row + g * head_dim;
      const char* k = static_cast<const char*>(a.k_cache.data) + base * kElementBytes;
      const char* v = static_cast<const char*>(a.v_cache.data) + base * kElementBytes;
      const bool active = var.sparse() && var.k > 0 && len > var.k;
      const bool calibrate = var.k > 0 && len > var.k;
      s.needed.assign(len, 0);
      s.vbar.clear();
      for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t h = g * group + hh, row = i * heads + h;
        const float* q = a.q.as<const float>() + row * head_dim;
        std::vector<float>& e = s.scores;
        e.resize(len);
        float max_score = -std::numeric_limits<float>::infinity();
        int64_t argmax = 0;  // the latest of the largest scores
        for (int64_t j = 0; j < len; ++j) {
          e[j] = Dot<kCache>(q, k + j * kv_row * kElementBytes, head_dim) * a.scale;
          max_score = std::max(max_score, e[j]);
          if (e[j] >= max_score) argmax = j;
        }
        // Decisions on the scores a_j, before they become e_j.
        if (!var.row_threshold.empty()) {
          float t = kNaN;
          if (calibrate) {
            s.sorted.assign(e.begin(), e.end());
            std::nth_element(s.sorted.begin(), s.sorted.begin() + var.k, s.sorted.end(),
                             std::greater<>());
            t = s.sorted[var.k];  // the a domain; converted to p below when post-softmax
          }
          var.row_threshold.as<float>()[row] = t;
        }
        const bool top_k = active && var.kind == V::Kind::kTopK;
        if (calibrate && (top_k || !var.topk_dropped.empty())) {
          TopKMask(e, var.k, s.sorted, s.topk_keep);
        }
        const bool theta_rows = active && var.kind == V::Kind::kTopTheta;
        float theta = -std::numeric_limits<float>::infinity();
        if (theta_rows) {
          theta =
              var.thresholds
                  .as<const float>()[h * var.thresholds.dim(1) + BinOf(var, var.thresholds, len)];
        }
        s.keep.assign(len, 1);
        int64_t count = len;
        if (top_k) {
          s.keep = s.topk_keep;
          count = var.k;
        } else if (theta_rows && !post) {
          count = 0;
          for (int64_t j = 0; j < len; ++j) {
            s.keep[j] = e[j] > theta;
            count += s.keep[j];
          }
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          e[j] = std::exp(e[j] - max_score);
          sum += e[j];
        }
        const float inv_sum = 1.0f / sum;
        if (calibrate && post && !var.row_threshold.empty()) {
          float& t = var.row_threshold.as<float>()[row];
          t = std::exp(t - max_score) * inv_sum;
        }
        if (!var.topk_dropped.empty()) {
          float topk_dropped = kNaN;
          if (calibrate) {
            topk_dropped = 0.0f;
            for (int64_t j = 0; j < len; ++j) {
              if (!s.topk_keep[j]) topk_dropped += e[j];
            }
          }
          var.topk_dropped.as<float>()[row] = topk_dropped;
        }
        if (theta_rows) {
          if (post) {
            count = 0;
            for (int64_t j = 0; j < len; ++j) {
              s.keep[j] = e[j] * inv_sum > theta;
              count += s.keep[j];
            }
          }
          if (var.cap_k && count > var.k) {  // the k latest survivors
            int64_t kept = 0;
            for (int64_t j = len - 1; j >= 0; --j) {
              if (!s.keep[j]) continue;
              if (kept < var.k) {
                ++kept;
              } else {
                s.keep[j] = 0;
              }
            }
            count = var.k;
          }
          if (count == 0 && !var.empty_row_zero) {
            s.keep[argmax] = 1;
            count = 1;
          }
        }
        float d = 0.0f, dropped = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          if (s.keep[j]) {
            d += e[j];
          } else {
            dropped += e[j];
          }
        }
        float weight_scale = inv_sum, lost = 0.0f, lse = max_score + std::log(sum);
        if (active && !post) {
          float missing = 0.0f;
          switch (var.sdc) {
            case V::Compensation::kNone:
              break;
            case V::Compensation::kExact:
              missing = dropped;
              break;
            case V::Compensation::kExpThreshold:
              missing = static_cast<float>(len - count) * std::exp(theta - max_score);
              break;
            case V::Compensation::kOffline:
              missing = var.missing_mass.as<const float>()[h * var.missing_mass.dim(1) +
                                                           BinOf(var, var.missing_mass, len)];
              break;
          }
          const float scaled = var.sdc_scale * missing;
          const float z = d + scaled;
          weight_scale = z > 0.0f ? 1.0f / z : 0.0f;
          lost = z > 0.0f ? scaled * weight_scale : 1.0f;
          lse = max_score + std::log(z);
        } else if (active) {
          lost = dropped * inv_sum;
        }
        float* out = a.out.as<float>() + row * head_dim;
        for (int64_t c = 0; c < head_dim; ++c) out[c] = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          if (!s.keep[j]) continue;
          AddScaledRow<kCache>(e[j] * weight_scale, v + j * kv_row * kElementBytes, head_dim, out);
          s.needed[j] = 1;
        }
        if (active && var.vmc && lost != 0.0f) {
          if (s.vbar.empty()) {
            s.vbar.assign(head_dim, 0.0f);
            for (int64_t j = 0; j < len; ++j) {
              AddScaledRow<kCache>(1.0f, v + j * kv_row * kElementBytes, head_dim, s.vbar.data());
            }
            for (float& x : s.vbar) x /= static_cast<float>(len);
          }
          for (int64_t c = 0; c < head_dim; ++c) out[c] += lost * s.vbar[c];
        }
        if (!a.lse.empty()) a.lse.as<float>()[row] = lse;
        if (!var.kept.empty()) var.kept.as<int32_t>()[row] = static_cast<int32_t>(count);
      }
      if (!var.kept_vrows.empty()) {
        int64_t rows_read = 0;
        for (uint8_t x : s.needed) rows_read += x;
        var.kept_vrows.as<int32_t>()[i * kv_heads + g] = static_cast<int32_t>(rows_read);
      }
    }
  }
}

}  // namespace

void AttendSparse(const AttentionArgs& a) {
  switch (a.k_cache.dtype) {
    case DType::kBF16:
      AttendSparseAll<DType::kBF16>(a);
      break;
    case DType::kF16:
      AttendSparseAll<DType::kF16>(a);
      break;
    default:
      AttendSparseAll<DType::kF32>(a);
  }
}

}  // namespace tessera
