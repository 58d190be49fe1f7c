#include "runtime/kv_cache.h"

#include "kernels/status_macros.h"

namespace tessera {

KvCache::KvCache(const ModelConfig& c, int64_t n_slots, int64_t max_seq)
    : n_slots_(n_slots), max_seq_(max_seq) {
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::vector<int64_t> dims = {n_slots, max_seq, c.num_key_value_heads, c.head_dim};
    k_.emplace_back(DType::kF32, dims);
    v_.emplace_back(DType::kF32, dims);
  }
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend* backend, int64_t layers,
                                                          int64_t kv_heads, int64_t head_dim,
                                                          int64_t n_slots, int64_t max_seq) {
  std::unique_ptr<KvCache> cache(new KvCache(n_slots, max_seq));
  const std::vector<int64_t> dims = {n_slots, max_seq, kv_heads, head_dim};
  for (int64_t l = 0; l < layers; ++l) {
    for (std::vector<Tensor>* kv : {&cache->k_, &cache->v_}) {
      kv->emplace_back(backend, DType::kF32);
      RETURN_IF_ERROR(kv->back().Resize(dims));
    }
  }
  return cache;
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (size_t l = 0; l < k_.size(); ++l) total += k_[l].view().bytes() + v_[l].view().bytes();
  return total;
}

size_t KvCache::BytesPerToken(const ModelConfig& c) {
  return static_cast<size_t>(2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim) * 4;
}

}  // namespace tessera
