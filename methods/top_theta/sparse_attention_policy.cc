#include "methods/top_theta/sparse_attention_policy.h"

#include <map>

#include "kernels/status_macros.h"
#include "methods/top_theta/visible_keys.h"
#include "runtime/kv_cache.h"
#include "runtime/llama_model.h"

namespace tessera::top_theta {

void AttentionCounters::Resize(int64_t layers_, int64_t heads_, int64_t kv_heads_) {
  layers = layers_;
  heads = heads_;
  kv_heads = kv_heads_;
  for (int p = 0; p < 2; ++p) {
    kept[p].assign(layers * heads, 0);
    visible[p].assign(layers * heads, 0);
    vrows[p].assign(layers * kv_heads, 0);
    vrows_visible[p].assign(layers * kv_heads, 0);
    rows[p] = 0;
  }
}

SparseAttentionPolicy::SparseAttentionPolicy(const AttentionVariant& base,
                                             std::vector<Layer> layers, int32_t bin_begin,
                                             int64_t bins, Backend* backend, int64_t heads,
                                             int64_t kv_heads)
    : base_(base),
      layers_(std::move(layers)),
      bin_begin_(bin_begin),
      bins_(bins),
      backend_(backend),
      heads_(heads),
      kv_heads_(kv_heads),
      pending_(layers_.size()) {
  for (size_t l = 0; l < layers_.size(); ++l) {
    thresholds_.emplace_back(backend, DType::kF32);
    missing_mass_.emplace_back(backend, DType::kF32);
    pending_[l].kept = Tensor(backend, DType::kI32);
    pending_[l].vrows = Tensor(backend, DType::kI32);
  }
  counters_.Resize(static_cast<int64_t>(layers_.size()), heads, kv_heads);
}

absl::StatusOr<AttentionVariant> SparseAttentionPolicy::Variant(const LayerContext& ctx) {
  const int64_t l = ctx.local_layer;
  RETURN_IF_ERROR(Fold(l));
  const ForwardBatch& batch = *ctx.batch;
  if (batch.kv_only) return AttentionVariant{};  // the layer writes K/V only: nothing is attended
  const Layer& layer = layers_[l];
  const int64_t rows = static_cast<int64_t>(batch.tokens.size());
  Pending& p = pending_[l];
  p.n = VisibleKeys(batch, *ctx.cache, l);
  p.decode.assign(rows, 0);
  std::map<int32_t, int32_t> count;
  for (int32_t s : batch.slots) ++count[s];
  bool sparsified = false;  // some row has more than k keys
  for (int64_t i = 0; i < rows; ++i) {
    p.decode[i] = count[batch.slots[i]] == 1 && p.n[i] > 1;
    sparsified = sparsified || (layer.k > 0 && p.n[i] > layer.k);
  }
  p.set = true;
  // A dense layer, or a pass whose rows are all short, runs the plain kernel (the same bits as
  // the sparse one on dense rows); every row then keeps its n keys.
  p.dense = !sparsified;
  if (p.dense) return AttentionVariant{};
  AttentionVariant v = base_;
  v.k = layer.k;
  v.bin_begin = bin_begin_;
  // Tables go to the backend's memory on first use.
  auto upload = [&](const std::vector<float>& host, Tensor& device) -> absl::StatusOr<TensorView> {
    if (device.view().data == nullptr) {
      RETURN_IF_ERROR(device.Resize({heads_, bins_}));
      RETURN_IF_ERROR(backend_->CopyToDevice(device.view().data, host.data(), host.size() * 4));
    }
    return device.view();
  };
  if (v.kind == AttentionVariant::Kind::kTopTheta) {
    ASSIGN_OR_RETURN(v.thresholds, upload(layer.thresholds, thresholds_[l]));
  }
  if (v.sdc == AttentionVariant::Compensation::kOffline) {
    ASSIGN_OR_RETURN(v.missing_mass, upload(layer.missing_mass, missing_mass_[l]));
  }
  RETURN_IF_ERROR(p.kept.Resize({rows, heads_}));
  RETURN_IF_ERROR(p.vrows.Resize({rows, kv_heads_}));
  v.kept = p.kept.view();
  v.kept_vrows = p.vrows.view();
  return v;
}

absl::Status SparseAttentionPolicy::Fold(int64_t l) {
  Pending& p = pending_[l];
  if (!p.set) return absl::OkStatus();
  p.set = false;
  const int64_t rows = static_cast<int64_t>(p.n.size());
  if (!p.dense) {
    host_kept_.resize(rows * heads_);
    host_vrows_.resize(rows * kv_heads_);
    RETURN_IF_ERROR(backend_->Synchronize());
    RETURN_IF_ERROR(
        backend_->CopyToHost(host_kept_.data(), p.kept.view().data, host_kept_.size() * 4));
    RETURN_IF_ERROR(
        backend_->CopyToHost(host_vrows_.data(), p.vrows.view().data, host_vrows_.size() * 4));
  }
  AttentionCounters& c = counters_;
  for (int64_t i = 0; i < rows; ++i) {
    const int phase = p.decode[i] ? kDecode : kPrefill;
    if (l == 0) ++c.rows[phase];
    for (int64_t h = 0; h < heads_; ++h) {
      c.kept[phase][l * heads_ + h] += p.dense ? p.n[i] : host_kept_[i * heads_ + h];
      c.visible[phase][l * heads_ + h] += p.n[i];
    }
    for (int64_t g = 0; g < kv_heads_; ++g) {
      c.vrows[phase][l * kv_heads_ + g] += p.dense ? p.n[i] : host_vrows_[i * kv_heads_ + g];
      c.vrows_visible[phase][l * kv_heads_ + g] += p.n[i];
    }
  }
  return absl::OkStatus();
}

absl::Status SparseAttentionPolicy::Flush() {
  for (size_t l = 0; l < pending_.size(); ++l) RETURN_IF_ERROR(Fold(static_cast<int64_t>(l)));
  return absl::OkStatus();
}

}  // namespace tessera::top_theta
