// Scatter of this step's keys and values into the per-slot caches.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

namespace tessera {

absl::Status CpuBackend::DoKvWrite(const KvWriteArgs& a) {
  const int64_t n = a.k.dim(0), n_slots = a.k_cache.dim(0), max_seq = a.k_cache.dim(1);
  const size_t row = a.k.row_bytes();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t slot = a.slots.as<const int32_t>()[i], pos = a.entries.as<const int32_t>()[i];
    if (slot < 0 || slot >= n_slots || pos < 0 || pos >= max_seq) {
      return absl::OutOfRangeError(absl::StrCat("KvWrite: token ", i, " slot ", slot,
                                                " entry ", pos, " is outside the cache [",
                                                n_slots, " slots, ", max_seq, " entries]"));
    }
    const int64_t dst = (static_cast<int64_t>(slot) * max_seq + pos) * row;
    std::memcpy(a.k_cache.as<char>() + dst, a.k.as<const char>() + i * row, row);
    std::memcpy(a.v_cache.as<char>() + dst, a.v.as<const char>() + i * row, row);
  }
  return absl::OkStatus();
}

}  // namespace tessera
