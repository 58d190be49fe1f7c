#include "methods/top_theta/calibrator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/top_theta/visible_keys.h"
#include "runtime/kv_cache.h"
#include "runtime/llama_model.h"

namespace tessera::top_theta {

void BinStats::Add(double threshold, double mass) {
  ++count;
  const double delta = threshold - mean;
  mean += delta / static_cast<double>(count);
  m2 += delta * (threshold - mean);
  mass_sum += mass;
}

void BinStats::Merge(const BinStats& o) {
  if (o.count == 0) return;
  if (count == 0) {
    *this = o;
    return;
  }
  const double total = static_cast<double>(count + o.count);
  const double delta = o.mean - mean;
  mean += delta * static_cast<double>(o.count) / total;
  m2 += o.m2 + delta * delta * static_cast<double>(count) * static_cast<double>(o.count) / total;
  count += o.count;
  mass_sum += o.mass_sum;
}

Calibrator::Calibrator(CalibrationOptions options, const RowSampler* sampler, const ShardPlan& plan,
                       Backend* backend)
    : options_(std::move(options)),
      sampler_(sampler),
      plan_(plan),
      backend_(backend),
      pending_(plan.layers()) {
  for (Pending& p : pending_) {
    p.thresholds = Tensor(backend, DType::kF32);
    p.mass = Tensor(backend, DType::kF32);
  }
}

absl::StatusOr<AttentionVariant> Calibrator::Variant(const LayerContext& ctx) {
  const int64_t l = ctx.local_layer;
  RETURN_IF_ERROR(Fold(l));
  AttentionVariant v;
  v.placement = options_.placement;
  v.k = options_.layer_k[ctx.layer];
  if (v.k == 0 || ctx.batch->kv_only) return v;
  if (options_.tac) v.kind = AttentionVariant::Kind::kTopK;
  const ForwardBatch& batch = *ctx.batch;
  const int64_t rows = static_cast<int64_t>(batch.tokens.size());
  Pending& p = pending_[l];
  RETURN_IF_ERROR(p.thresholds.Resize({rows, plan_.heads}));
  v.row_threshold = p.thresholds.view();
  if (options_.missing_mass) {
    RETURN_IF_ERROR(p.mass.Resize({rows, plan_.heads}));
    v.topk_dropped = p.mass.view();
  }
  p.slots = batch.slots;
  p.n = VisibleKeys(batch, *ctx.cache, l);
  p.set = true;
  return v;
}

absl::Status Calibrator::Fold(int64_t l) {
  Pending& p = pending_[l];
  if (!p.set) return absl::OkStatus();
  p.set = false;
  const int64_t rows = static_cast<int64_t>(p.n.size()), heads = plan_.heads;
  std::vector<float> thresholds(rows * heads), mass(options_.missing_mass ? rows * heads : 0);
  RETURN_IF_ERROR(backend_->Synchronize());
  RETURN_IF_ERROR(backend_->CopyToHost(thresholds.data(), p.thresholds.view().data,
                                       thresholds.size() * sizeof(float)));
  if (!mass.empty()) {
    RETURN_IF_ERROR(
        backend_->CopyToHost(mass.data(), p.mass.view().data, mass.size() * sizeof(float)));
  }
  const int32_t layer = static_cast<int32_t>(plan_.layer_begin + l);
  for (int64_t i = 0; i < rows; ++i) {
    auto it = slot_requests_.find(p.slots[i]);
    if (it == slot_requests_.end()) continue;
    const std::vector<int32_t>& chosen = sampler_->Rows(layer, it->second);
    if (!std::binary_search(chosen.begin(), chosen.end(), p.n[i])) continue;
    for (int64_t h = 0; h < heads; ++h) {
      const float t = thresholds[i * heads + h];
      if (std::isnan(t)) {
        return absl::InternalError(absl::StrCat("calibration: layer ", layer, " row n = ", p.n[i],
                                                " was chosen but has no threshold"));
      }
      stats_[{layer, static_cast<int32_t>(plan_.head_begin + h), p.n[i]}].Add(
          t, mass.empty() ? 0.0 : mass[i * heads + h]);
    }
  }
  return absl::OkStatus();
}

absl::Status Calibrator::Flush() {
  for (size_t l = 0; l < pending_.size(); ++l) RETURN_IF_ERROR(Fold(static_cast<int64_t>(l)));
  return absl::OkStatus();
}

namespace {

constexpr int kWords = 11;  // layer, head, n, count (2 words), mean, m2, mass_sum (2 each)

void PutDouble(double x, int32_t* w) { std::memcpy(w, &x, sizeof(double)); }
double GetDouble(const int32_t* w) {
  double x;
  std::memcpy(&x, w, sizeof(double));
  return x;
}

}  // namespace

absl::StatusOr<CalibrationStats> MergeStats(Communicator* world, const CalibrationStats& local) {
  if (world == nullptr || world->size() == 1) return local;
  const int ranks = world->size();
  int32_t count = static_cast<int32_t>(local.size());
  std::vector<int32_t> counts(ranks);
  RETURN_IF_ERROR(world->AllGather(TensorView::Of(&count, DType::kI32, {1}),
                                   TensorView::Of(counts.data(), DType::kI32, {ranks})));
  const int32_t most = std::max(1, *std::max_element(counts.begin(), counts.end()));
  std::vector<int32_t> send(static_cast<size_t>(most) * kWords, 0);
  int64_t r = 0;
  for (const auto& [key, s] : local) {
    int32_t* w = send.data() + r++ * kWords;
    w[0] = std::get<0>(key);
    w[1] = std::get<1>(key);
    w[2] = std::get<2>(key);
    w[3] = static_cast<int32_t>(s.count & 0x7fffffff);
    w[4] = static_cast<int32_t>(s.count >> 31);
    PutDouble(s.mean, w + 5);
    PutDouble(s.m2, w + 7);
    PutDouble(s.mass_sum, w + 9);
  }
  std::vector<int32_t> recv(send.size() * ranks);
  RETURN_IF_ERROR(world->AllGather(
      TensorView::Of(send.data(), DType::kI32, {static_cast<int64_t>(send.size())}),
      TensorView::Of(recv.data(), DType::kI32, {static_cast<int64_t>(recv.size())})));
  CalibrationStats merged;
  for (int rank = 0; rank < ranks; ++rank) {
    for (int32_t i = 0; i < counts[rank]; ++i) {
      const int32_t* w = recv.data() + (static_cast<size_t>(rank) * most + i) * kWords;
      BinStats s;
      s.count = static_cast<int64_t>(w[3]) | (static_cast<int64_t>(w[4]) << 31);
      s.mean = GetDouble(w + 5);
      s.m2 = GetDouble(w + 7);
      s.mass_sum = GetDouble(w + 9);
      merged[{w[0], w[1], w[2]}].Merge(s);
    }
  }
  return merged;
}

absl::StatusOr<CalibrationResult> Finalize(const CalibrationStats& stats,
                                           const CalibrationOptions& options) {
  CalibrationResult out;
  std::set<int32_t> layers_seen;
  for (const auto& [key, s] : stats) {
    const auto [layer, head, n] = key;
    layers_seen.insert(layer);
    CalibratedBin bin;
    bin.layer = layer;
    bin.head = head;
    bin.n = n;
    bin.samples = s.count;
    bin.k = options.layer_k[layer];
    const double std_dev = std::sqrt(std::max(0.0, s.m2 / static_cast<double>(s.count)));
    bin.value = s.mean + options.add_sigma * std_dev;
    out.thresholds.push_back(bin);
    if (options.missing_mass) {
      bin.value = s.mass_sum / static_cast<double>(s.count);
      bin.k = 0;
      out.missing_mass.push_back(bin);
    }
  }
  for (size_t l = 0; l < options.layer_k.size(); ++l) {
    if (options.layer_k[l] > 0 && !layers_seen.count(static_cast<int32_t>(l))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "calibration: layer ", l, " (k = ", options.layer_k[l],
          ") recorded no row: every "
          "calibration sample has at most k = ",
          options.layer_k[l],
          " tokens, so no row of it "
          "is sparsified; use longer samples (more than k + 1 tokens), more of them, or a "
          "smaller k for this layer"));
    }
  }
  SortBins(out.thresholds);
  SortBins(out.missing_mass);
  return out;
}

}  // namespace tessera::top_theta
