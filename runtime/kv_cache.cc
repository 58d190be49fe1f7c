#include "runtime/kv_cache.h"

namespace tessera {

KvCache::KvCache(const ModelConfig& c, int64_t n_slots, int64_t max_seq)
    : KvCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, n_slots, max_seq) {}

KvCache::KvCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t n_slots,
                 int64_t max_seq)
    : n_slots_(n_slots), max_seq_(max_seq) {
  for (int64_t l = 0; l < layers; ++l) {
    k_.emplace_back(DType::kF32, std::vector<int64_t>{n_slots, max_seq, kv_heads, head_dim});
    v_.emplace_back(DType::kF32, std::vector<int64_t>{n_slots, max_seq, kv_heads, head_dim});
  }
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
