// KvCache: per-layer key and value caches for a fixed number of sequence slots.
//
// Layout per layer: (n_slots, max_seq, n_kv_heads, head_dim), F32. A sequence owns one slot for
// its lifetime; the token at position p of that sequence lives at [slot, p]. The runtime writes
// entries through Backend::KvWrite and reads them in Backend::Attention.
#ifndef TESSERA_RUNTIME_KV_CACHE_H_
#define TESSERA_RUNTIME_KV_CACHE_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"

#include "runtime/model_config.h"
#include "runtime/tensor.h"

namespace tessera {

class KvCache {
 public:
  // All layers and KV heads of the model (a single rank), in host memory.
  KvCache(const ModelConfig& config, int64_t n_slots, int64_t max_seq);
  // The layers and KV heads one rank holds, in `backend`'s memory; layer() indices are then
  // local to the stage. ResourceExhausted when the memory cannot be had.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(Backend* backend, int64_t layers,
                                                         int64_t kv_heads, int64_t head_dim,
                                                         int64_t n_slots, int64_t max_seq);

  TensorView k(int64_t layer) const { return k_[layer].view(); }
  TensorView v(int64_t layer) const { return v_[layer].view(); }
  int64_t n_slots() const { return n_slots_; }
  int64_t max_seq() const { return max_seq_; }
  size_t bytes() const;

  // Bytes per cached token across all layers (keys and values).
  static size_t BytesPerToken(const ModelConfig& config);

 private:
  KvCache(int64_t n_slots, int64_t max_seq) : n_slots_(n_slots), max_seq_(max_seq) {}

  int64_t n_slots_, max_seq_;
  std::vector<Tensor> k_, v_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_KV_CACHE_H_
