// Elementwise ops: SiLU-multiply, add, lerp, counter-based dropout, dtype cast. Grid-stride loops, one element per thread
// per step; every output element depends only on the same input elements, so in-place use
// (out == gate, out == a or b) is safe.
#include "kernels/cuda/device_utils.cuh"
#include "kernels/philox.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void SiluMulKernel(const float* gate, const float* up, float* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(const float* a, const float* b, float* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = a[i] + b[i];
  }
}

__global__ void LerpKernel(const float* a, const float* b, float* out, float weight,
                           int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = a[i], y = b[i];
    out[i] = y == x ? x : fmaf(weight, __fsub_rn(y, x), x);
  }
}

// One thread per group of four elements of a row (one Philox call gives four words).
__global__ void PhiloxDropoutKernel(float* x, const uint32_t* row_words, int64_t n, int64_t h,
                                    int64_t column_offset, uint32_t stream_word, float rate) {
  const int64_t groups = (h + 3) / 4;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < n * groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = g / groups, group = g % groups;
    const uint32_t* w = row_words + 4 * row;
    uint32_t c[4] = {static_cast<uint32_t>(column_offset / 4 + group), w[2], w[3], stream_word};
    PhiloxRounds(c, w[0], w[1]);
    for (int lane = 0; lane < 4 && 4 * group + lane < h; ++lane) {
      if (UniformFromBits(c[lane]) < rate) x[row * h + 4 * group + lane] = 0.0f;
    }
  }
}

// Widening that keeps a NaN's sign (the F16 -> F32 conversion instruction need not), so that
// CastValue gives the CPU's bits for every input.
template <typename In>
__device__ __forceinline__ float WidenKeepingNanSign(In v) {
  return ToFloat(v);
}
template <>
__device__ __forceinline__ float WidenKeepingNanSign<__half>(__half v) {
  const unsigned short bits = __half_as_ushort(v);
  if ((bits & 0x7fffu) > 0x7c00u) return __uint_as_float((unsigned(bits & 0x8000u) << 16) | 0x7fc00000u);
  return __half2float(v);
}

template <typename In, typename Out>
__global__ void CastKernel(const In* in, Out* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = CastValue<Out>(WidenKeepingNanSign(in[i]));
  }
}

template <typename In>
void LaunchCastFrom(const In* in, void* out, Storage out_type, int64_t count,
                    cudaStream_t stream) {
  const unsigned grid = GridFor(count, kThreads);
  switch (out_type) {
    case Storage::kF32:
      CastKernel<<<grid, kThreads, 0, stream>>>(in, static_cast<float*>(out), count);
      break;
    case Storage::kF16:
      CastKernel<<<grid, kThreads, 0, stream>>>(in, static_cast<__half*>(out), count);
      break;
    case Storage::kBF16:
      CastKernel<<<grid, kThreads, 0, stream>>>(in, static_cast<__nv_bfloat16*>(out), count);
      break;
  }
}

}  // namespace

cudaError_t LaunchSiluMul(const float* gate, const float* up, float* out, int64_t count,
                          cudaStream_t stream) {
  SiluMulKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(gate, up, out, count);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(const float* a, const float* b, float* out, int64_t count,
                      cudaStream_t stream) {
  AddKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(a, b, out, count);
  return cudaGetLastError();
}

cudaError_t LaunchLerp(const float* a, const float* b, float* out, float weight, int64_t count,
                       cudaStream_t stream) {
  LerpKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(a, b, out, weight, count);
  return cudaGetLastError();
}

cudaError_t LaunchPhiloxDropout(float* x, const uint32_t* row_words, int64_t n, int64_t h,
                                int64_t column_offset, uint32_t stream_word, float rate,
                                cudaStream_t stream) {
  const int64_t groups = n * ((h + 3) / 4);
  PhiloxDropoutKernel<<<GridFor(groups, kThreads), kThreads, 0, stream>>>(
      x, row_words, n, h, column_offset, stream_word, rate);
  return cudaGetLastError();
}

cudaError_t LaunchCast(const void* in, Storage in_type, void* out, Storage out_type,
                       int64_t count, cudaStream_t stream) {
  switch (in_type) {
    case Storage::kF32:
      LaunchCastFrom(static_cast<const float*>(in), out, out_type, count, stream);
      break;
    case Storage::kF16:
      LaunchCastFrom(static_cast<const __half*>(in), out, out_type, count, stream);
      break;
    case Storage::kBF16:
      LaunchCastFrom(static_cast<const __nv_bfloat16*>(in), out, out_type, count, stream);
      break;
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
