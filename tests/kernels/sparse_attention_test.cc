// The sparse attention variants of the CPU backend (shared/specs/top_theta.md §8.1-8.5, 8.8):
// the hand example, bit-identity with dense attention when nothing is dropped, the Top-k
// identities, the tie rules, counters, calibration outputs, and every mode x placement x SDC x
// VMC combination against a naive double-precision implementation written from the spec.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/sparse_variants.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::RandomFloats;
using V = AttentionVariant;
constexpr float kInf = std::numeric_limits<float>::infinity();

// A ragged batch over one F32 cache: query row i of slot slots[i] sees cache rows
// 0..entries[i].
struct Problem {
  int64_t heads = 4, kv_heads = 2, head_dim = 8, n_slots = 2, max_seq = 40;
  std::vector<int32_t> slots, entries;
  std::vector<float> q, k, v;

  Problem(int64_t heads_, int64_t kv_heads_, std::vector<int32_t> slots_,
          std::vector<int32_t> entries_, uint64_t seed)
      : heads(heads_), kv_heads(kv_heads_), slots(std::move(slots_)), entries(std::move(entries_)) {
    const int64_t cache = n_slots * max_seq * kv_heads * head_dim;
    k = RandomFloats(cache, seed);
    v = RandomFloats(cache, seed + 1);
    q = RandomFloats(rows() * heads * head_dim, seed + 2);
    for (float& x : q) x *= 3.0f;  // peaked rows, so that thresholds separate keys
  }
  int64_t rows() const { return static_cast<int64_t>(slots.size()); }
  const float* key(int64_t i, int64_t g, int64_t j) const {
    return k.data() + ((slots[i] * max_seq + j) * kv_heads + g) * head_dim;
  }
  const float* value(int64_t i, int64_t g, int64_t j) const {
    return v.data() + ((slots[i] * max_seq + j) * kv_heads + g) * head_dim;
  }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }
};

struct Outputs {
  std::vector<float> out, lse, row_threshold, topk_dropped;
  std::vector<int32_t> kept, kept_vrows;
};

// The op's arguments over `p`'s queries and rows, with caches k and v of `cache_dtype`; `lse`
// may be null.
AttentionArgs ArgsOf(Problem& p, DType cache_dtype, void* k, void* v, float* out, float* lse) {
  const int64_t n = p.rows();
  const std::initializer_list<int64_t> cache = {p.n_slots, p.max_seq, p.kv_heads, p.head_dim};
  return AttentionArgs{
      TensorView::Of(p.q.data(), DType::kF32, {n, p.heads, p.head_dim}),
      TensorView::Of(k, cache_dtype, cache),
      TensorView::Of(v, cache_dtype, cache),
      TensorView::Of(p.slots.data(), DType::kI32, {n}),
      TensorView::Of(p.entries.data(), DType::kI32, {n}),
      TensorView::Of(out, DType::kF32, {n, p.heads, p.head_dim}),
      lse == nullptr ? TensorView() : TensorView::Of(lse, DType::kF32, {n, p.heads}),
      p.scale()};
}

Outputs Attend(Problem& p, V var, bool counters = true) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t n = p.rows();
  Outputs o;
  o.out.assign(n * p.heads * p.head_dim, NAN);
  o.lse.assign(n * p.heads, NAN);
  o.kept.assign(n * p.heads, -1);
  o.kept_vrows.assign(n * p.kv_heads, -1);
  o.row_threshold.assign(n * p.heads, -7.0f);
  o.topk_dropped.assign(n * p.heads, -7.0f);
  if (counters) {
    var.kept = TensorView::Of(o.kept.data(), DType::kI32, {n, p.heads});
    var.kept_vrows = TensorView::Of(o.kept_vrows.data(), DType::kI32, {n, p.kv_heads});
    var.row_threshold = TensorView::Of(o.row_threshold.data(), DType::kF32, {n, p.heads});
    var.topk_dropped = TensorView::Of(o.topk_dropped.data(), DType::kF32, {n, p.heads});
  }
  AttentionArgs a = ArgsOf(p, DType::kF32, p.k.data(), p.v.data(), o.out.data(), o.lse.data());
  a.variant = var;
  const absl::Status status = backend->Attention(a);
  EXPECT_TRUE(status.ok()) << status;
  return o;
}

// The spec's algorithm (§1, §3, §4) in double precision, one row at a time, with sorting for
// the selections. Returns the output row; `kept` gets the kept set.
std::vector<double> NaiveRow(const Problem& p, const V& var, const std::vector<float>& table,
                             const std::vector<float>& mass, int64_t bins, int64_t i, int64_t h,
                             std::vector<int>* kept) {
  const int64_t g = h / (p.heads / p.kv_heads), n = p.entries[i] + 1, d = p.head_dim;
  std::vector<double> a(n);
  for (int64_t j = 0; j < n; ++j) {
    double dot = 0;
    for (int64_t t = 0; t < d; ++t)
      dot += double(p.q[(i * p.heads + h) * d + t]) * p.key(i, g, j)[t];
    a[j] = dot * p.scale();
  }
  const double m = *std::max_element(a.begin(), a.end());
  double z_all = 0;
  for (double x : a) z_all += std::exp(x - m);
  const bool post = var.placement == V::Placement::kPostSoftmax;
  const bool active = var.sparse() && var.k > 0 && n > var.k;
  std::vector<int> s;
  const int64_t bin =
      std::clamp<int64_t>(n, var.bin_begin, var.bin_begin + bins - 1) - var.bin_begin;
  const double theta = var.kind == V::Kind::kTopTheta ? table[h * bins + bin] : -INFINITY;
  if (!active) {
    s.resize(n);
    std::iota(s.begin(), s.end(), 0);
  } else if (var.kind == V::Kind::kTopK) {
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);  // larger score first; ties: larger index first
    std::sort(order.begin(), order.end(),
              [&](int x, int y) { return a[x] != a[y] ? a[x] > a[y] : x > y; });
    s.assign(order.begin(), order.begin() + var.k);
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const double x = post ? std::exp(a[j] - m) / z_all : a[j];
      if (x > theta) s.push_back(static_cast<int>(j));
    }
    if (var.cap_k && static_cast<int64_t>(s.size()) > var.k) s.erase(s.begin(), s.end() - var.k);
    if (s.empty() && !var.empty_row_zero) {
      const int64_t from_end = std::max_element(a.rbegin(), a.rend()) - a.rbegin();
      s.push_back(static_cast<int>(n - 1 - from_end));  // the latest maximum
    }
  }
  std::sort(s.begin(), s.end());
  *kept = s;
  double dsum = 0;
  for (int j : s) dsum += std::exp(a[j] - m);
  double z = z_all, lost = 0;
  if (active && !post) {
    double missing = 0;
    if (var.sdc == V::Compensation::kExact) missing = z_all - dsum;
    if (var.sdc == V::Compensation::kExpThreshold)
      missing = (n - double(s.size())) * std::exp(theta - m);
    if (var.sdc == V::Compensation::kOffline) missing = mass[h * bins + bin];
    z = dsum + var.sdc_scale * missing;
    lost = z > 0 ? var.sdc_scale * missing / z : 1.0;
  } else if (active) {
    lost = (z_all - dsum) / z_all;
  }
  std::vector<double> out(d, 0.0);
  for (int j : s) {
    for (int64_t t = 0; t < d; ++t)
      out[t] += (z > 0 ? std::exp(a[j] - m) / z : 0) * p.value(i, g, j)[t];
  }
  if (active && var.vmc) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t t = 0; t < d; ++t) out[t] += lost * p.value(i, g, j)[t] / n;
    }
  }
  return out;
}

V Variant(V::Kind kind, V::Placement placement, V::Compensation sdc, bool vmc, int32_t k) {
  V var;
  var.kind = kind;
  var.placement = placement;
  var.sdc = sdc;
  var.vmc = vmc;
  var.k = k;
  return var;
}

std::vector<V> AllCombinations(int32_t k) { return testing::ValidSparseVariants(k); }

std::string Describe(const V& v) {
  return "kind " + std::to_string(int(v.kind)) + " placement " + std::to_string(int(v.placement)) +
         " sdc " + std::to_string(int(v.sdc)) + " vmc " + std::to_string(v.vmc) + " cap_k " +
         std::to_string(v.cap_k) + " k " + std::to_string(v.k);
}

// A prefill of 30 rows in slot 0 and decode rows in slot 1, GQA group 2.
Problem Mixed(int64_t heads = 4, int64_t kv_heads = 2, uint64_t seed = 5) {
  std::vector<int32_t> slots, entries;
  for (int32_t i = 0; i < 30; ++i) {
    slots.push_back(0);
    entries.push_back(i);
  }
  for (int32_t e : {3, 17, 38}) {
    slots.push_back(1);
    entries.push_back(e);
  }
  return Problem(heads, kv_heads, slots, entries, seed);
}

// One head, head_dim 1, scale 1, one row over keys whose scores are `scores` and values `values`.
Problem OneHeadRow(const std::vector<float>& scores, const std::vector<float>& values) {
  Problem p(1, 1, {0}, {static_cast<int32_t>(scores.size()) - 1}, 1);
  p.head_dim = 1;
  p.q = {1.0f};
  p.k.assign(p.n_slots * p.max_seq, 0.0f);
  p.v.assign(p.n_slots * p.max_seq, 0.0f);
  for (size_t j = 0; j < scores.size(); ++j) {
    p.k[j] = scores[j];
    p.v[j] = values[j];
  }
  return p;
}

TEST(SparseAttentionTest, HandExample) {
  // The scores of the row of 4 keys are a = [2, 1, 0, -1].
  Problem p = OneHeadRow({2, 1, 0, -1}, {1, 10, 100, 1000});
  std::vector<float> theta{0.5f};
  V var = Variant(V::Kind::kTopTheta, V::Placement::kPreSoftmax, V::Compensation::kExact, false, 2);
  var.thresholds = TensorView::Of(theta.data(), DType::kF32, {1, 1});
  Outputs o = Attend(p, var);
  const double w0 = 0.6439, w1 = 0.2369;
  EXPECT_NEAR(o.out[0], w0 * 1 + w1 * 10, 1e-3);
  EXPECT_EQ(o.kept[0], 2);
  EXPECT_EQ(o.kept_vrows[0], 2);
  EXPECT_NEAR(std::exp(o.lse[0] - 2.0f), 1.5530, 1e-4);  // Z = Z_all

  var.sdc = V::Compensation::kExpThreshold;
  o = Attend(p, var);
  EXPECT_NEAR(std::exp(o.lse[0] - 2.0f), 1.8142, 1e-4);
  EXPECT_NEAR(o.out[0], (1.0 * 1 + std::exp(-1.0) * 10) / 1.8142, 1e-3);

  var.sdc = V::Compensation::kExact;
  var.vmc = true;
  o = Attend(p, var);
  EXPECT_NEAR(o.out[0], w0 * 1 + w1 * 10 + 0.1192 * (1 + 10 + 100 + 1000) / 4.0, 1e-2);

  var.sdc = V::Compensation::kNone;
  var.vmc = false;
  o = Attend(p, var);  // the survivors' own softmax
  EXPECT_NEAR(o.out[0], (1.0 + std::exp(-1.0) * 10) / (1 + std::exp(-1.0)), 1e-4);
}

TEST(SparseAttentionTest, NothingDroppedIsBitIdenticalToDense) {
  for (auto [heads, kv] : {std::pair<int64_t, int64_t>{4, 4}, {4, 1}, {8, 2}}) {
    Problem p = Mixed(heads, kv, 11);
    const Outputs dense = Attend(p, V{}, /*counters=*/false);
    std::vector<float> theta(heads * 3, -kInf), mass(heads * 3, 0.0f);
    for (int32_t k : {0, 2, 50}) {  // k = 50 >= every row: dense rows; k = 2 and 0: theta -inf
      for (V var : AllCombinations(k)) {
        if (var.kind == V::Kind::kTopK && k != 50) continue;  // Top-k drops whenever n > k
        var.thresholds = TensorView::Of(theta.data(), DType::kF32, {heads, 3});
        var.missing_mass = TensorView::Of(mass.data(), DType::kF32, {heads, 3});
        const Outputs o = Attend(p, var);
        EXPECT_EQ(0, std::memcmp(o.out.data(), dense.out.data(), dense.out.size() * 4))
            << Describe(var) << " heads " << heads << " kv " << kv;
        for (int64_t i = 0; i < p.rows(); ++i) {
          EXPECT_EQ(o.kept[i * heads], p.entries[i] + 1) << Describe(var);
          EXPECT_EQ(o.kept_vrows[i * kv], p.entries[i] + 1) << Describe(var);
        }
      }
    }
  }
}

TEST(SparseAttentionTest, EveryCombinationMatchesTheSpecInDouble) {
  for (auto [heads, kv] : {std::pair<int64_t, int64_t>{4, 4}, {4, 1}, {8, 2}}) {
    Problem p = Mixed(heads, kv, 21);
    const int64_t bins = 12;
    // Thresholds per head and bin around the middle of the rows' scores: pre-softmax logits in
    // [-0.5, 0.5], post-softmax probabilities around 1/n.
    std::vector<float> pre(heads * bins), post(heads * bins), mass(heads * bins);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t b = 0; b < bins; ++b) {
        pre[h * bins + b] = -0.5f + 0.1f * static_cast<float>((h + b) % 10);
        post[h * bins + b] = 1.0f / static_cast<float>(5 + 3 * b);
        mass[h * bins + b] = 0.1f * static_cast<float>(1 + (h * b) % 7);
      }
    }
    for (bool cap : {false, true}) {
      for (V var : AllCombinations(6)) {
        if (cap && var.kind != V::Kind::kTopTheta) continue;
        var.cap_k = cap;
        var.bin_begin = 4;
        var.sdc_scale = var.sdc == V::Compensation::kNone ? 1.0f : 0.7f;
        const bool post_softmax = var.placement == V::Placement::kPostSoftmax;
        std::vector<float>& table = post_softmax ? post : pre;
        var.thresholds = TensorView::Of(table.data(), DType::kF32, {heads, bins});
        var.missing_mass = TensorView::Of(mass.data(), DType::kF32, {heads, bins});
        const Outputs o = Attend(p, var);
        for (int64_t i = 0; i < p.rows(); ++i) {
          const int64_t group = heads / kv;
          std::vector<std::vector<int>> sets(heads);
          for (int64_t h = 0; h < heads; ++h) {
            const std::vector<double> ref = NaiveRow(p, var, table, mass, bins, i, h, &sets[h]);
            for (int64_t t = 0; t < p.head_dim; ++t) {
              const float got = o.out[(i * heads + h) * p.head_dim + t];
              ASSERT_NEAR(got, ref[t], 2e-5 * (1 + std::abs(ref[t])))
                  << Describe(var) << " row " << i << " head " << h;
            }
            EXPECT_EQ(o.kept[i * heads + h], static_cast<int32_t>(sets[h].size())) << Describe(var);
            if (var.cap_k && p.entries[i] + 1 > var.k) {  // an active row keeps at most k
              EXPECT_LE(o.kept[i * heads + h], var.k) << Describe(var);
            }
          }
          for (int64_t g = 0; g < kv; ++g) {
            std::vector<int> all;
            for (int64_t h = g * group; h < (g + 1) * group; ++h) {
              all.insert(all.end(), sets[h].begin(), sets[h].end());
            }
            std::sort(all.begin(), all.end());
            all.erase(std::unique(all.begin(), all.end()), all.end());
            EXPECT_EQ(o.kept_vrows[i * kv + g], static_cast<int32_t>(all.size())) << Describe(var);
          }
        }
      }
    }
  }
}

TEST(SparseAttentionTest, TopKIdentities) {
  Problem p = Mixed(4, 2, 31);
  // Top-k pre-softmax with exact SDC (s = 1) equals Top-k post-softmax, with or without VMC.
  for (bool vmc : {false, true}) {
    const Outputs pre = Attend(
        p, Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kExact, vmc, 5));
    const Outputs post = Attend(
        p, Variant(V::Kind::kTopK, V::Placement::kPostSoftmax, V::Compensation::kNone, vmc, 5));
    for (size_t x = 0; x < pre.out.size(); ++x) {
      ASSERT_NEAR(pre.out[x], post.out[x], 1e-6 * (1 + std::abs(post.out[x]))) << x;
    }
    EXPECT_EQ(pre.kept, post.kept);
  }
  // k = n - 1 with exact SDC: the dense output minus p_drop * v_drop for the one dropped key.
  Problem one(1, 1, {0}, {9}, 41);
  const Outputs dense = Attend(one, V{}, false);
  const Outputs topk = Attend(
      one, Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kExact, false, 9));
  std::vector<int> kept;
  std::vector<float> none;
  NaiveRow(one,
           Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kExact, false, 9),
           none, none, 1, 0, 0, &kept);
  ASSERT_EQ(kept.size(), 9u);
  int dropped = 0;
  while (std::find(kept.begin(), kept.end(), dropped) != kept.end()) ++dropped;
  // p_drop from the dense row's log-sum-exp.
  double score = 0;
  for (int64_t t = 0; t < one.head_dim; ++t) score += double(one.q[t]) * one.key(0, 0, dropped)[t];
  const double p_drop = std::exp(score * one.scale() - dense.lse[0]);
  for (int64_t t = 0; t < one.head_dim; ++t) {
    EXPECT_NEAR(topk.out[t], dense.out[t] - p_drop * one.value(0, 0, dropped)[t], 1e-5);
  }
}

TEST(SparseAttentionTest, TiesCapAndEmptyRows) {
  // One head, head_dim 1, scale 1, scores a = [1, 3, 3, 0, 3, 2]: the Top-k ties at 3 are
  // filled from the latest column; cap_k keeps the latest survivors; an empty Top-theta row
  // keeps its latest maximum or nothing.
  // The output's value names the kept columns (distinct powers of two).
  Problem p = OneHeadRow({1, 3, 3, 0, 3, 2}, {1, 2, 4, 8, 16, 32});
  // Top-k, k = 2 of three 3s: columns 4 and 2.
  V topk = Variant(V::Kind::kTopK, V::Placement::kPostSoftmax, V::Compensation::kNone, false, 2);
  Outputs o = Attend(p, topk);
  const double z = std::exp(-2.0) + 3 * 1.0 + std::exp(-3.0) + std::exp(-1.0);
  EXPECT_NEAR(o.out[0], (4 + 16) / z, 1e-5);
  EXPECT_EQ(o.kept[0], 2);
  // Top-theta pre-softmax, theta = 1.5: columns 1, 2, 4, 5; cap_k = 2 keeps 4 and 5.
  std::vector<float> theta{1.5f};
  V th = Variant(V::Kind::kTopTheta, V::Placement::kPostSoftmax, V::Compensation::kNone, false, 2);
  th.placement = V::Placement::kPreSoftmax;
  th.thresholds = TensorView::Of(theta.data(), DType::kF32, {1, 1});
  th.cap_k = true;
  o = Attend(p, th);
  EXPECT_NEAR(o.out[0], (16 + 32 * std::exp(-1.0)) / (1 + std::exp(-1.0)), 1e-4);
  EXPECT_EQ(o.kept[0], 2);
  // theta = 3 (strict): nothing survives; the latest maximum (column 4) is kept.
  theta[0] = 3.0f;
  th.cap_k = false;
  o = Attend(p, th);
  EXPECT_NEAR(o.out[0], 16.0f, 1e-5);
  EXPECT_EQ(o.kept[0], 1);
  th.empty_row_zero = true;
  o = Attend(p, th);
  EXPECT_EQ(o.out[0], 0.0f);
  EXPECT_EQ(o.kept[0], 0);
  EXPECT_EQ(o.kept_vrows[0], 0);
  // With exact SDC and VMC an empty row outputs the V mean.
  th.sdc = V::Compensation::kExact;
  th.vmc = true;
  o = Attend(p, th);
  EXPECT_NEAR(o.out[0], 63.0 / 6.0, 1e-4);
}

TEST(SparseAttentionTest, CalibrationOutputs) {
  Problem p = Mixed(4, 2, 51);
  const int32_t k = 7;
  for (V::Placement pl : {V::Placement::kPreSoftmax, V::Placement::kPostSoftmax}) {
    V record;  // dense forward, recording
    record.k = k;
    record.placement = pl;
    const Outputs dense = Attend(p, V{}, false);
    const Outputs o = Attend(p, record);
    EXPECT_EQ(0, std::memcmp(o.out.data(), dense.out.data(), dense.out.size() * 4));
    // Each recorded row, with its own threshold as theta, keeps exactly k keys (§8.4).
    for (int64_t i = 0; i < p.rows(); ++i) {
      for (int64_t h = 0; h < p.heads; ++h) {
        const float t = o.row_threshold[i * p.heads + h];
        if (p.entries[i] + 1 <= k) {
          EXPECT_TRUE(std::isnan(t));
          EXPECT_TRUE(std::isnan(o.topk_dropped[i * p.heads + h]));
          continue;
        }
        Problem one(p.heads, p.kv_heads, {p.slots[i]}, {p.entries[i]}, 0);
        one.k = p.k;
        one.v = p.v;
        one.q.assign(p.q.begin() + i * p.heads * p.head_dim,
                     p.q.begin() + (i + 1) * p.heads * p.head_dim);
        std::vector<float> theta(p.heads, kInf);
        theta[h] = t;
        V apply = Variant(V::Kind::kTopTheta, pl, V::Compensation::kNone, false, k);
        apply.thresholds = TensorView::Of(theta.data(), DType::kF32, {p.heads, 1});
        const Outputs applied = Attend(one, apply);
        EXPECT_EQ(applied.kept[h], k) << "row " << i << " head " << h;
        // topk_dropped is Top-k's exact missing mass: 1 - kept mass, times Z_all.
        std::vector<int> kept;
        NaiveRow(
            p, Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kNone, false, k),
            {}, {}, 1, i, h, &kept);
        double z_all = 0, dropped = 0, m = -1e300;
        std::vector<double> a(p.entries[i] + 1);
        for (size_t j = 0; j < a.size(); ++j) {
          double dot = 0;
          for (int64_t c = 0; c < p.head_dim; ++c) {
            dot += double(p.q[(i * p.heads + h) * p.head_dim + c]) * p.key(i, h / 2, j)[c];
          }
          a[j] = dot * p.scale();
          m = std::max(m, a[j]);
        }
        for (size_t j = 0; j < a.size(); ++j) {
          z_all += std::exp(a[j] - m);
          if (std::find(kept.begin(), kept.end(), int(j)) == kept.end())
            dropped += std::exp(a[j] - m);
        }
        EXPECT_NEAR(o.topk_dropped[i * p.heads + h], dropped, 1e-5 * z_all);
      }
    }
  }
}

TEST(SparseAttentionTest, HalfPrecisionCachesFollowTheF32Kernel) {
  // The same selection code runs for every cache dtype; an F16 cache of values exactly
  // representable in F16 gives the F32 result.
  Problem p = Mixed(4, 2, 61);
  for (float& x : p.k) x = std::round(x * 64) / 64;
  for (float& x : p.v) x = std::round(x * 64) / 64;
  for (float& x : p.q) x = std::round(x * 64) / 64;
  const V var =
      Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kExact, true, 6);
  const Outputs f32 = Attend(p, var);
  std::vector<uint16_t> k16(p.k.size()), v16(p.v.size());
  for (size_t x = 0; x < p.k.size(); ++x) {
    k16[x] = FloatToF16(p.k[x]);
    v16[x] = FloatToF16(p.v[x]);
  }
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t n = p.rows();
  std::vector<float> out(n * p.heads * p.head_dim);
  std::vector<int32_t> kept(n * p.heads);
  AttentionArgs a = ArgsOf(p, DType::kF16, k16.data(), v16.data(), out.data(), nullptr);
  a.variant = var;
  a.variant.kept = TensorView::Of(kept.data(), DType::kI32, {n, p.heads});
  ASSERT_OK(backend->Attention(a));
  EXPECT_EQ(kept, f32.kept);
  for (size_t x = 0; x < out.size(); ++x) EXPECT_NEAR(out[x], f32.out[x], 1e-5);
}

TEST(SparseAttentionTest, BadVariantsAreRefused) {
  Problem p = Mixed(4, 2, 71);
  auto backend = *MakeBackend(BackendKind::kCpu);
  const int64_t n = p.rows();
  std::vector<float> out(n * p.heads * p.head_dim), theta(4 * 2);
  AttentionArgs a = ArgsOf(p, DType::kF32, p.k.data(), p.v.data(), out.data(), nullptr);
  auto error = [&](V var) {
    a.variant = var;
    return std::string(backend->Attention(a).message());
  };
  V v = Variant(V::Kind::kTopTheta, V::Placement::kPreSoftmax, V::Compensation::kNone, false, 4);
  EXPECT_NE(error(v).find("thresholds"), std::string::npos);         // no table
  v.thresholds = TensorView::Of(theta.data(), DType::kF32, {2, 4});  // 2 heads, not 4
  EXPECT_NE(error(v).find("thresholds"), std::string::npos);
  v.thresholds = TensorView::Of(theta.data(), DType::kF32, {4, 2});
  EXPECT_EQ(error(v), "");
  v.placement = V::Placement::kPostSoftmax;
  v.sdc = V::Compensation::kExact;
  EXPECT_NE(error(v).find("pre-softmax"), std::string::npos);
  EXPECT_NE(error(Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kExpThreshold,
                          false, 4))
                .find("Top-theta"),
            std::string::npos);
  EXPECT_NE(
      error(Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kNone, false, 0))
          .find("k >= 1"),
      std::string::npos);
  EXPECT_NE(
      error(Variant(V::Kind::kTopK, V::Placement::kPreSoftmax, V::Compensation::kNone, false, -3))
          .find("negative"),
      std::string::npos);
}

}  // namespace
}  // namespace tessera
