// Rotary position embedding, "rotate half" layout, in place. One thread per (token, head, i)
// with i < head_dim / 2: it owns the pair (x[i], x[i + half]). Angles are position * inv_freq
// in F32 and sin/cos are the accurate (not the fast-intrinsic) functions, as on the CPU.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

__global__ void RopeKernel(float* x, const int32_t* positions, const float* inv_freq, int64_t n,
                           int64_t heads, int64_t half, float scaling) {
  const int64_t total = n * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // token * heads + head
    const int64_t t = row / heads;
    const float angle = static_cast<float>(positions[t]) * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    c *= scaling;
    s *= scaling;
    float* v = x + row * 2 * half;
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c - x2 * s;
    v[i + half] = x2 * c + x1 * s;
  }
}

}  // namespace

cudaError_t LaunchRope(float* x, const int32_t* positions, const float* inv_freq, int64_t n,
                       int64_t heads, int64_t head_dim, float attention_scaling,
                       cudaStream_t stream) {
  const int64_t half = head_dim / 2;
  constexpr int kThreads = 256;
  RopeKernel<<<GridFor(n * heads * half, kThreads), kThreads, 0, stream>>>(
      x, positions, inv_freq, n, heads, half, attention_scaling);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
