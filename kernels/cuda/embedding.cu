// Embedding gather with vocabulary-shard masking: one block per token row.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

template <typename T>
__global__ void EmbeddingKernel(const int32_t* ids, const T* table, int64_t rows, int64_t dim,
                                int64_t vocab_start, float* out) {
  const int64_t i = blockIdx.x;
  const int64_t local = static_cast<int64_t>(ids[i]) - vocab_start;
  float* dst = out + i * dim;
  if (local < 0 || local >= rows) {
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) dst[d] = 0.0f;
    return;
  }
  const T* src = table + local * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) dst[d] = ToFloat(src[d]);
}

}  // namespace

cudaError_t LaunchEmbedding(const int32_t* ids, const void* table, Storage table_type,
                            int64_t rows, int64_t dim, int64_t vocab_start, float* out, int64_t n,
                            cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n)), block(256);
  switch (table_type) {
    case Storage::kF32:
      EmbeddingKernel<<<grid, block, 0, stream>>>(ids, static_cast<const float*>(table), rows,
                                                  dim, vocab_start, out);
      break;
    case Storage::kF16:
      EmbeddingKernel<<<grid, block, 0, stream>>>(ids, static_cast<const __half*>(table), rows,
                                                  dim, vocab_start, out);
      break;
    case Storage::kBF16:
      EmbeddingKernel<<<grid, block, 0, stream>>>(
          ids, static_cast<const __nv_bfloat16*>(table), rows, dim, vocab_start, out);
      break;
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
