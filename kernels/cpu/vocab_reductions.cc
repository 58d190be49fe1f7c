// Reductions over a (shard of the) vocabulary: argmax, top-k, and softmax statistics from which
// log-probabilities and entropy follow and which combine across shards.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace tessera {
namespace {

// Whether (value x at index i) comes before (y at j) in the order of op_args.h: larger first,
// lower index first on ties, NaN after every number.
inline bool RanksBefore(float x, int64_t i, float y, int64_t j) {
  const bool x_nan = std::isnan(x), y_nan = std::isnan(y);
  if (x_nan || y_nan) return x_nan == y_nan ? i < j : y_nan;
  return x > y || (x == y && i < j);
}

}  // namespace

absl::Status CpuBackend::DoArgMax(const ArgMaxArgs& a) {
  const int64_t n = a.logits.dim(0), v = a.logits.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = a.logits.as<const float>() + i * v;
    int64_t best = 0;
    for (int64_t j = 1; j < v; ++j) {
      // The first maximum wins, as torch.argmax; a NaN only where the row holds nothing else.
      if (RanksBefore(row[j], j, row[best], best)) best = j;
    }
    a.values.as<float>()[i] = row[best];
    a.indices.as<int32_t>()[i] = static_cast<int32_t>(best + a.index_offset);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoTopK(const TopKArgs& a) {
  const int64_t n = a.logits.dim(0), v = a.logits.dim(1), k = a.values.dim(1);
  std::vector<int32_t> order(v);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = a.logits.as<const float>() + i * v;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [row](int32_t x, int32_t y) {
      return RanksBefore(row[x], x, row[y], y);  // a strict weak order, NaN included
    });
    for (int64_t r = 0; r < k; ++r) {
      a.values.as<float>()[i * k + r] = row[order[r]];
      a.indices.as<int32_t>()[i * k + r] = static_cast<int32_t>(order[r] + a.index_offset);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoSoftmaxStats(const SoftmaxStatsArgs& a) {
  const int64_t n = a.logits.dim(0), v = a.logits.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = a.logits.as<const float>() + i * v;
    const float m = *std::max_element(row, row + v);
    double s = 0.0, shifted = 0.0;
    if (m > -std::numeric_limits<float>::infinity()) {  // a row of only -inf has no mass
      for (int64_t j = 0; j < v; ++j) {
        const double d = static_cast<double>(row[j]) - m;
        const double e = std::exp(d);
        if (e == 0.0) continue;  // -inf (and underflow): no weight, and d * e would be NaN
        s += e;
        shifted += d * e;
      }
    }
    a.max.as<float>()[i] = m;
    a.sum_exp.as<float>()[i] = static_cast<float>(s);
    a.sum_exp_shifted.as<float>()[i] = static_cast<float>(shifted);
  }
  return absl::OkStatus();
}

}  // namespace tessera
