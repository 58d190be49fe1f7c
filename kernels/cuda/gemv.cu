// Decode GEMV: y[m, n] (+)= x[m, k] * w[n, k]^T for m <= kGemvMaxRows. Decode at small batch
// is bound by reading the weights, so each weight row is read exactly once, by one warp, with
// 16-byte loads where the row allows (k a multiple of 8 and 16-byte aligned buffers), widened
// to F32 in registers and multiplied with all m activation rows (F32, from L1/L2) with F32
// accumulation, as the CPU backend's fused GEMV does.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

constexpr int kWarps = 8;  // weight rows per block
constexpr int kThreads = kWarps * 32;

// Eight or four weights from one 16-byte load, widened to F32.
__device__ __forceinline__ void Unpack(uint4 raw, const __nv_bfloat16*, float* w) {
  const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    w[2 * q] = __uint_as_float(u[q] << 16);
    w[2 * q + 1] = __uint_as_float(u[q] & 0xffff0000u);
  }
}
__device__ __forceinline__ void Unpack(uint4 raw, const __half*, float* w) {
  const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    __half2 h;
    memcpy(&h, &u[q], sizeof(h));
    const float2 f = __half22float2(h);
    w[2 * q] = f.x;
    w[2 * q + 1] = f.y;
  }
}
__device__ __forceinline__ void Unpack(uint4 raw, const float*, float* w) {
  w[0] = __uint_as_float(raw.x);
  w[1] = __uint_as_float(raw.y);
  w[2] = __uint_as_float(raw.z);
  w[3] = __uint_as_float(raw.w);
}

template <typename T, int M, bool kVector>
__global__ void __launch_bounds__(kThreads)
    GemvKernel(const float* __restrict__ x, const T* __restrict__ w, float* __restrict__ y,
               int64_t n, int64_t k, bool accumulate) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (j >= n) return;
  const T* row = w + j * k;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  if constexpr (kVector) {
    constexpr int kPer = 16 / sizeof(T);  // weights per 16-byte load
#pragma unroll 2
    for (int64_t base = lane * kPer; base < k; base += 32 * kPer) {
      float wf[kPer];
      Unpack(__ldg(reinterpret_cast<const uint4*>(row + base)), static_cast<const T*>(nullptr),
             wf);
#pragma unroll
      for (int r = 0; r < M; ++r) {
        const float4* xr = reinterpret_cast<const float4*>(x + r * k + base);
#pragma unroll
        for (int q = 0; q < kPer / 4; ++q) {
          const float4 xv = xr[q];
          acc[r] = fmaf(wf[4 * q], xv.x, acc[r]);
          acc[r] = fmaf(wf[4 * q + 1], xv.y, acc[r]);
          acc[r] = fmaf(wf[4 * q + 2], xv.z, acc[r]);
          acc[r] = fmaf(wf[4 * q + 3], xv.w, acc[r]);
        }
      }
    }
  } else {
    for (int64_t i = lane; i < k; i += 32) {
      const float wi = ToFloat(row[i]);
#pragma unroll
      for (int r = 0; r < M; ++r) acc[r] = fmaf(wi, x[r * k + i], acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = WarpSum(acc[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < M; ++r) {
      float* dst = y + r * n + j;
      *dst = accumulate ? *dst + acc[r] : acc[r];
    }
  }
}

template <typename T, int M>
void LaunchRows(const float* x, const T* w, float* y, int64_t n, int64_t k, bool accumulate,
                cudaStream_t stream) {
  constexpr int kPer = 16 / sizeof(T);
  const bool vector = k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(w) % 16 == 0 && k % kPer == 0;
  const unsigned grid = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  if (vector) {
    GemvKernel<T, M, true><<<grid, kThreads, 0, stream>>>(x, w, y, n, k, accumulate);
  } else {
    GemvKernel<T, M, false><<<grid, kThreads, 0, stream>>>(x, w, y, n, k, accumulate);
  }
}

template <typename T>
void LaunchTyped(const float* x, const T* w, float* y, int64_t m, int64_t n, int64_t k,
                 bool accumulate, cudaStream_t stream) {
  switch (m) {
    case 1: return LaunchRows<T, 1>(x, w, y, n, k, accumulate, stream);
    case 2: return LaunchRows<T, 2>(x, w, y, n, k, accumulate, stream);
    case 3: return LaunchRows<T, 3>(x, w, y, n, k, accumulate, stream);
    case 4: return LaunchRows<T, 4>(x, w, y, n, k, accumulate, stream);
    case 5: return LaunchRows<T, 5>(x, w, y, n, k, accumulate, stream);
    case 6: return LaunchRows<T, 6>(x, w, y, n, k, accumulate, stream);
    case 7: return LaunchRows<T, 7>(x, w, y, n, k, accumulate, stream);
    default: return LaunchRows<T, 8>(x, w, y, n, k, accumulate, stream);
  }
}

}  // namespace

cudaError_t LaunchGemv(const float* x, const void* w, Storage w_type, float* y, int64_t m,
                       int64_t n, int64_t k, bool accumulate, cudaStream_t stream) {
  if (m < 1 || m > kGemvMaxRows) return cudaErrorInvalidValue;
  switch (w_type) {
    case Storage::kF32:
      LaunchTyped(x, static_cast<const float*>(w), y, m, n, k, accumulate, stream);
      break;
    case Storage::kF16:
      LaunchTyped(x, static_cast<const __half*>(w), y, m, n, k, accumulate, stream);
      break;
    case Storage::kBF16:
      LaunchTyped(x, static_cast<const __nv_bfloat16*>(w), y, m, n, k, accumulate, stream);
      break;
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
