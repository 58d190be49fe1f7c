// KeyScores (kernels/op_args.h): one warp per key; each head's dot product is split over the
// warp's lanes along head_dim and summed with shuffles, and the warp keeps the maximum over heads.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void KeyScoresKernel(const float* q, const void* k_cache, Storage cache_type,
                                int64_t slot_base, int64_t count, int64_t heads, int64_t kv_heads,
                                int64_t head_dim, float scale, float* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (j >= count) return;
  const int64_t group = heads / kv_heads;
  float best = -INFINITY;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t key = slot_base + (j * kv_heads + h / group) * head_dim;
    float dot = 0.0f;
    for (int64_t d = lane; d < head_dim; d += 32) {
      dot += q[h * head_dim + d] * LoadStorage(k_cache, cache_type, key + d);
    }
    dot = WarpSum(dot);
    best = fmaxf(best, dot * scale);
  }
  if (lane == 0) out[j] = best;
}

template <typename T>
__global__ void AverageKernel(const T* a, const T* b, T* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromFloat<T>((ToFloat(a[i]) + ToFloat(b[i])) * 0.5f);
  }
}

}  // namespace

cudaError_t LaunchKeyScores(const float* q, const void* k_cache, Storage cache_type,
                            int64_t slot_base, int64_t count, int64_t heads, int64_t kv_heads,
                            int64_t head_dim, float scale, float* out, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((count + kWarpsPerBlock - 1) / kWarpsPerBlock);
  KeyScoresKernel<<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(
      q, k_cache, cache_type, slot_base, count, heads, kv_heads, head_dim, scale, out);
  return cudaGetLastError();
}

cudaError_t LaunchAverage(const void* a, const void* b, void* out, Storage type, int64_t count,
                          cudaStream_t stream) {
  constexpr int kThreads = 256;
  const unsigned grid = GridFor(count, kThreads);
  switch (type) {
    case Storage::kF16:
      AverageKernel<<<grid, kThreads, 0, stream>>>(static_cast<const __half*>(a),
                                                   static_cast<const __half*>(b),
                                                   static_cast<__half*>(out), count);
      break;
    case Storage::kBF16:
      AverageKernel<<<grid, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(a),
                                                   static_cast<const __nv_bfloat16*>(b),
                                                   static_cast<__nv_bfloat16*>(out), count);
      break;
    default:
      AverageKernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(a),
                                                   static_cast<const float*>(b),
                                                   static_cast<float*>(out), count);
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
