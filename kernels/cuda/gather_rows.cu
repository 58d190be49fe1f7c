// Row gather: one block per output row copies its bytes, as 4-byte words when the row size
// allows (every F32/F16/BF16 row of even length), else byte by byte.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

template <typename Word>
__global__ void GatherRowsKernel(const Word* in, int64_t rows, const int32_t* indices, Word* out,
                                 int64_t row_words, int* error_flags) {
  const int64_t i = blockIdx.x;
  const int32_t src = indices[i];
  if (src < 0 || src >= rows) {
    if (threadIdx.x == 0) error_flags[kGatherOutOfRange] = 1;
    return;
  }
  const Word* from = in + static_cast<int64_t>(src) * row_words;
  Word* to = out + i * row_words;
  for (int64_t e = threadIdx.x; e < row_words; e += blockDim.x) to[e] = from[e];
}

}  // namespace

cudaError_t LaunchGatherRows(const void* in, int64_t rows, const int32_t* indices, int64_t m,
                             void* out, int64_t row_bytes, int* error_flags, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(m);
  if (row_bytes % 4 == 0) {
    GatherRowsKernel<uint32_t><<<blocks, 256, 0, stream>>>(
        static_cast<const uint32_t*>(in), rows, indices, static_cast<uint32_t*>(out),
        row_bytes / 4, error_flags);
  } else {
    GatherRowsKernel<uint8_t><<<blocks, 256, 0, stream>>>(
        static_cast<const uint8_t*>(in), rows, indices, static_cast<uint8_t*>(out), row_bytes,
        error_flags);
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
