// Per-row power-of-two scaling around the F16 tensor-core GEMM (gemm_cublas.cc), so that
// activations beyond F16's range (|x| > 65504, seen in real models' residual streams) do not
// become infinities when they are rounded to F16 for cuBLAS.
//
// Row i is divided by s_i = 2^e_i, the smallest power of two with max_j |x_ij| / s_i <= 2^15
// (s_i = 1 for every row already inside that range), and rounded to F16; the GEMM output of
// the row is multiplied by s_i afterwards. Powers of two scale exactly, so a row within range
// is computed exactly as without scaling, and a row with outliers loses only what F16 rounding
// of x / s_i loses (entries below 2^-24 s_i flush to zero: at most 2^-39 of the row's largest).
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kF16Target = 32768.0f;  // scaled rows stay within 2^15

__global__ void __launch_bounds__(kThreads)
    CastRowsToF16ScaledKernel(const float* x, int64_t k, __half* out, float* scales) {
  __shared__ float shared[32];
  const float* row = x + blockIdx.x * k;
  float amax = 0.0f;
  for (int64_t j = threadIdx.x; j < k; j += kThreads) amax = fmaxf(amax, fabsf(row[j]));
  amax = BlockMax(amax, shared);
  float scale = 1.0f;
  if (amax > kF16Target && isfinite(amax)) {
    scale = exp2f(ceilf(log2f(amax / kF16Target)));
    if (amax / scale > kF16Target) scale *= 2.0f;  // guard log2f rounding
  }
  const float inverse = 1.0f / scale;  // exact: a power of two
  __half* dst = out + blockIdx.x * k;
  for (int64_t j = threadIdx.x; j < k; j += kThreads) dst[j] = FromFloat<__half>(row[j] * inverse);
  if (threadIdx.x == 0) scales[blockIdx.x] = scale;
}

__global__ void ScaleRowsKernel(const float* product, const float* scales, int64_t m, int64_t n,
                                bool accumulate, float* y) {
  const int64_t count = m * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = product[i] * scales[i / n];
    y[i] = accumulate ? y[i] + v : v;
  }
}

}  // namespace

cudaError_t LaunchCastRowsToF16Scaled(const float* x, int64_t m, int64_t k, void* out,
                                      float* scales, cudaStream_t stream) {
  CastRowsToF16ScaledKernel<<<static_cast<unsigned>(m), kThreads, 0, stream>>>(
      x, k, static_cast<__half*>(out), scales);
  return cudaGetLastError();
}

cudaError_t LaunchScaleRows(const float* product, const float* scales, int64_t m, int64_t n,
                            bool accumulate, float* y, cudaStream_t stream) {
  ScaleRowsKernel<<<GridFor(m * n, kThreads), kThreads, 0, stream>>>(product, scales, m, n,
                                                                      accumulate, y);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
