// Scatter of this step's keys and values into the per-slot caches: one block per token, the
// block's threads copy its K and V rows. Tokens whose slot or entry is outside the cache are
// skipped and flagged (CudaBackend::Synchronize() reports OutOfRange).
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

__global__ void KvWriteKernel(const float* k, const float* v, float* k_cache, float* v_cache,
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
    k_cache[dst + e] = k[i * row + e];
    v_cache[dst + e] = v[i * row + e];
  }
}

}  // namespace

cudaError_t LaunchKvWrite(const float* k, const float* v, float* k_cache, float* v_cache,
                          const int32_t* slots, const int32_t* entries, int64_t n,
                          int64_t n_slots, int64_t max_seq, int64_t row, int* error_flags,
                          cudaStream_t stream) {
  KvWriteKernel<<<static_cast<unsigned>(n), 256, 0, stream>>>(k, v, k_cache, v_cache, slots,
                                                              entries, n_slots, max_seq, row,
                                                              error_flags);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
