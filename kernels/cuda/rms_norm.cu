// RMSNorm as the CPU backend computes it: x * (1 / sqrt(mean(x^2) + eps)) * weight, with the sum
// of squares accumulated in F64. One block per row; each thread reads and then writes the same
// elements, so `out` may alias `in`.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(const float* in, const T* weight, float* out, int64_t dim, float eps) {
  __shared__ double partial[32];
  const float* x = in + blockIdx.x * dim;
  float* y = out + blockIdx.x * dim;
  double sum_sq = 0.0;
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) {
    const double v = x[j];
    sum_sq += v * v;
  }
  sum_sq = BlockSum(sum_sq, partial);
  const float inv_rms = 1.0f / sqrtf(static_cast<float>(sum_sq / static_cast<double>(dim)) + eps);
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) {
    y[j] = ToFloat(weight[j]) * (x[j] * inv_rms);
  }
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* in, const void* weight, Storage weight_type, float* out,
                          int64_t n, int64_t dim, float eps, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n)), block(kThreads);
  switch (weight_type) {
    case Storage::kF32:
      RmsNormKernel<<<grid, block, 0, stream>>>(in, static_cast<const float*>(weight), out, dim,
                                                eps);
      break;
    case Storage::kF16:
      RmsNormKernel<<<grid, block, 0, stream>>>(in, static_cast<const __half*>(weight), out, dim,
                                                eps);
      break;
    case Storage::kBF16:
      RmsNormKernel<<<grid, block, 0, stream>>>(in, static_cast<const __nv_bfloat16*>(weight),
                                                out, dim, eps);
      break;
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
