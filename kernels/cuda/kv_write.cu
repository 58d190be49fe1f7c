// Scatter of this step's keys and values into the per-slot caches: one block per token, the
// block's threads copy its K and V rows, rounded to nearest even for an F16 / BF16 cache. Tokens
// whose slot or entry is outside the cache are skipped and flagged (CudaBackend::Synchronize()
// reports OutOfRange).
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

template <typename T>
__global__ void KvWriteKernel(const float* k, const float* v, T* k_cache, T* v_cache,
                              const int32_t* slots, const int32_t* entries, int64_t n_slots,
                              int64_t max_seq, int64_t row, int* error_flags) {
  const int64_t i = blockIdx.x;
  const int32_t slot = slots[i], pos = entries[i];
  if (slot < 0 || slot >= n_slots || pos < 0 || pos >= max_seq) {
    if (threadIdx.x == 0) error_flags[kKvWriteOutOfRange] = 1;
    return;
  }
  const int64_t dst = (static_cast<int64_t>(slot) * max_seq + pos) * row;
  for (int64_t e = threadIdx.x; e < row; e += blockDim.x) {
    k_cache[dst + e] = FromFloat<T>(k[i * row + e]);
    v_cache[dst + e] = FromFloat<T>(v[i * row + e]);
  }
}

template <typename T>
void Launch(const float* k, const float* v, void* k_cache, void* v_cache, const int32_t* slots,
            const int32_t* entries, int64_t n, int64_t n_slots, int64_t max_seq, int64_t row,
            int* error_flags, cudaStream_t stream) {
  KvWriteKernel<T><<<static_cast<unsigned>(n), 256, 0, stream>>>(
      k, v, static_cast<T*>(k_cache), static_cast<T*>(v_cache), slots, entries, n_slots,
      max_seq, row, error_flags);
}

}  // namespace

cudaError_t LaunchKvWrite(const float* k, const float* v, void* k_cache, void* v_cache,
                          Storage cache_type, const int32_t* slots, const int32_t* entries,
                          int64_t n, int64_t n_slots, int64_t max_seq, int64_t row,
                          int* error_flags, cudaStream_t stream) {
  switch (cache_type) {
    case Storage::kF16:
      Launch<__half>(k, v, k_cache, v_cache, slots, entries, n, n_slots, max_seq, row,
                     error_flags, stream);
      break;
    case Storage::kBF16:
      Launch<__nv_bfloat16>(k, v, k_cache, v_cache, slots, entries, n, n_slots, max_seq, row,
                            error_flags, stream);
      break;
    default:
      Launch<float>(k, v, k_cache, v_cache, slots, entries, n, n_slots, max_seq, row,
                    error_flags, stream);
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
