// KV_NOISE's reframed step (shared/specs/harp.md §5, experimental, not the reference): the
// hesitating sequences' tokens of this step run again, their input embeddings masked as in
// EXACT, over a masked copy of their cached K/V instead of a recomputation of the whole
// sequence. Before each layer, KvNoiseAttention copies the entries the sequence had before this
// step, layer by layer, from the real cache into the reframed pass's scratch cache (whose layers
// share one storage) and applies the dropout mask to the copy of K and of V in the listed
// layers (all when none are listed); the step's own K/V are then written and attended as usual.
// The real cache is never changed.
//
// Masks: row words (key, entry position, t) as the embeddings' mask; counter word 3 =
// (global layer << 17) | (0 for K, 1 for V) << 16 | 'KV'; columns are global (KV head
// kv_head_begin onwards times head_dim), so that the masks are the same at every
// tensor-parallel size. Needs an F32 KV cache (the mask is applied in place to the copy).
#ifndef TESSERA_METHODS_HARP_KV_NOISE_H_
#define TESSERA_METHODS_HARP_KV_NOISE_H_

#include <array>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/forward_hooks.h"
#include "runtime/kv_cache.h"
#include "runtime/tensor.h"

namespace tessera {

class KvNoiseAttention : public AttentionPolicy {
 public:
  // A sequence of the reframed pass: its slot in the scratch cache and in the real one, the
  // entries of the real one before this step (per local layer), the mask key and t.
  struct Row {
    int32_t scratch_slot;
    int32_t real_slot;
    std::vector<int32_t> entries;  // per local layer
    std::array<uint32_t, 2> key;
    int32_t step;
  };
  // `layers` (global indices) are masked; empty: all. Valid for one Forward call.
  void Set(const KvCache* real, std::vector<Row> rows, float delta, std::set<int64_t> layers);
  // Reserves the copied entries in `scratch` (host bookkeeping; before the Forward call).
  absl::Status Reserve(KvCache& scratch) const;
  // Copies (and masks) layer ctx.local_layer's entries; the plain attention variant.
  absl::StatusOr<AttentionVariant> Variant(const LayerContext& ctx) override;

 private:
  absl::Status MaskRows(Backend& backend, TensorView rows, const Row& row, int64_t layer,
                        uint32_t which, const KvCache& real, int64_t local_layer,
                        int64_t column_offset);

  const KvCache* real_ = nullptr;
  std::vector<Row> rows_;
  float delta_ = 0.0f;
  std::set<int64_t> layers_;
  std::vector<uint32_t> words_;
  Tensor device_words_;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_HARP_KV_NOISE_H_
