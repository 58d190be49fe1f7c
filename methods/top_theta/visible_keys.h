// The visible keys n of each row of a pass, as the attention op sees them (entries + 1): the
// slot's cache length on the layer, this pass's rows already reserved, minus the slot's rows
// after it in the batch.
#ifndef TESSERA_METHODS_TOP_THETA_VISIBLE_KEYS_H_
#define TESSERA_METHODS_TOP_THETA_VISIBLE_KEYS_H_

#include <cstdint>
#include <map>
#include <vector>

#include "runtime/kv_cache.h"
#include "runtime/llama_model.h"

namespace tessera::top_theta {

inline std::vector<int32_t> VisibleKeys(const ForwardBatch& batch, const KvCache& cache,
                                        int64_t local_layer) {
  const int64_t rows = static_cast<int64_t>(batch.slots.size());
  std::vector<int32_t> n(rows);
  std::map<int32_t, int32_t> later;
  for (int64_t i = rows - 1; i >= 0; --i) {
    const int32_t slot = batch.slots[i];
    n[i] = static_cast<int32_t>(cache.length(local_layer, slot)) - later[slot]++;
  }
  return n;
}

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_VISIBLE_KEYS_H_
