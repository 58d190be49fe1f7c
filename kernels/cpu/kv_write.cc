// Scatter of this step's keys and values into the per-slot caches: F32 rows are copied, F16 and
// BF16 rows rounded to nearest even (as Cast).
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

namespace tessera {
namespace {

// `count` F32 values to `dst` in the cache's dtype.
void StoreRow(const float* src, int64_t count, DType dtype, char* dst) {
  switch (dtype) {
    case DType::kBF16: {
      uint16_t* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t e = 0; e < count; ++e) out[e] = FloatToBf16(src[e]);
      return;
    }
    case DType::kF16: {
      uint16_t* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t e = 0; e < count; ++e) out[e] = FloatToF16(src[e]);
      return;
    }
    default:
      std::memcpy(dst, src, count * sizeof(float));
  }
}

}  // namespace

absl::Status CpuBackend::DoKvWrite(const KvWriteArgs& a) {
  const int64_t n = a.k.dim(0), n_slots = a.k_cache.dim(0), max_seq = a.k_cache.dim(1);
  const DType dtype = a.k_cache.dtype;
  const int64_t row = a.k.row_size();                          // elements per token
  const int64_t cache_row = row * static_cast<int64_t>(DTypeSize(dtype));  // bytes per entry
  for (int64_t i = 0; i < n; ++i) {
    const int32_t slot = a.slots.as<const int32_t>()[i], pos = a.entries.as<const int32_t>()[i];
    if (slot < 0 || slot >= n_slots || pos < 0 || pos >= max_seq) {
      return absl::OutOfRangeError(absl::StrCat("KvWrite: token ", i, " slot ", slot,
                                                " entry ", pos, " is outside the cache [",
                                                n_slots, " slots, ", max_seq, " entries]"));
    }
    const int64_t dst = (static_cast<int64_t>(slot) * max_seq + pos) * cache_row;
    StoreRow(a.k.as<const float>() + i * row, row, dtype, a.k_cache.as<char>() + dst);
    StoreRow(a.v.as<const float>() + i * row, row, dtype, a.v_cache.as<char>() + dst);
  }
  return absl::OkStatus();
}

}  // namespace tessera
