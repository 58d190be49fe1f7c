#include "methods/harp/kv_noise.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/shard_plan.h"

namespace tessera {
namespace {

constexpr uint32_t kKvStream = 0x4B56u;  // 'KV'

}  // namespace

void KvNoiseAttention::Set(const KvCache* real, std::vector<Row> rows, float delta,
                           std::set<int64_t> layers) {
  real_ = real;
  rows_ = std::move(rows);
  delta_ = delta;
  layers_ = std::move(layers);
}

absl::Status KvNoiseAttention::Reserve(KvCache& scratch) const {
  for (const Row& row : rows_) {
    for (int64_t l = 0; l < scratch.layers(); ++l) {
      const auto positions = real_->positions(l, row.real_slot);
      ASSIGN_OR_RETURN(const int32_t first,
                       scratch.Append(l, row.scratch_slot, positions.subspan(0, row.entries[l])));
      if (first != 0) return absl::InternalError("KV_NOISE: the scratch slot was not empty");
    }
  }
  return absl::OkStatus();
}

absl::Status KvNoiseAttention::MaskRows(Backend& backend, TensorView rows, const Row& row,
                                        int64_t layer, uint32_t which, const KvCache& real,
                                        int64_t local_layer, int64_t column_offset) {
  const int64_t n = rows.dim(0);
  words_.clear();
  const auto positions = real.positions(local_layer, row.real_slot);
  for (int64_t e = 0; e < n; ++e) {
    words_.insert(words_.end(), {row.key[0], row.key[1], static_cast<uint32_t>(positions[e]),
                                 static_cast<uint32_t>(row.step)});
  }
  if (device_words_.view().rank == 0) device_words_ = Tensor(&backend, DType::kI32);
  RETURN_IF_ERROR(device_words_.Resize({n, 4}));
  RETURN_IF_ERROR(backend.CopyToDevice(device_words_.view().data, words_.data(),
                                       words_.size() * sizeof(uint32_t)));
  const uint32_t stream = (static_cast<uint32_t>(layer) << 17) | (which << 16) | kKvStream;
  return backend.PhiloxDropout({rows, device_words_.view(), stream, delta_, column_offset});
}

absl::StatusOr<AttentionVariant> KvNoiseAttention::Variant(const LayerContext& ctx) {
  const int64_t l = ctx.local_layer;
  KvCache& scratch = *ctx.cache;
  if (real_->dtype() != DType::kF32 || scratch.dtype() != DType::kF32) {
    return absl::FailedPreconditionError(
        "method.harp.mode: KV_NOISE masks a copy of the cached K/V and needs an F32 KV cache "
        "(--kv-dtype f32)");
  }
  const bool masked = layers_.empty() || layers_.count(ctx.layer) > 0;
  const int64_t row_width = real_->k(l).dim(2) * real_->k(l).dim(3);
  const int64_t column_offset = ctx.plan->kv_head_begin * real_->k(l).dim(3);
  for (const Row& row : rows_) {
    const int64_t n = row.entries[l];
    if (n == 0) continue;
    for (uint32_t which : {0u, 1u}) {
      const TensorView from = which == 0 ? real_->k(l) : real_->v(l);
      const TensorView to = which == 0 ? scratch.k(l) : scratch.v(l);
      // [slots, capacity, kv_heads, head_dim]: the slot's first n entries as [n, row_width].
      const TensorView src = from.Rows(row.real_slot, row.real_slot + 1)
                                 .Reshaped({from.dim(1), row_width})
                                 .Rows(0, n);
      const TensorView dst = to.Rows(row.scratch_slot, row.scratch_slot + 1)
                                 .Reshaped({to.dim(1), row_width})
                                 .Rows(0, n);
      RETURN_IF_ERROR(ctx.backend->CopyWithinDevice(dst.data, src.data, dst.bytes()));
      if (masked) {
        RETURN_IF_ERROR(MaskRows(*ctx.backend, dst, row, ctx.layer, which, *real_, l,
                                 column_offset));
      }
    }
  }
  return AttentionVariant{};
}

}  // namespace tessera
