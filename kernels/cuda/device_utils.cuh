// Device helpers shared by the CUDA backend's kernels: weight and cache loads widened to F32,
// stores rounded from F32, warp and block reductions, launch-size helpers. Internal to kernels/cuda (.cu files only).
#ifndef TESSERA_KERNELS_CUDA_DEVICE_UTILS_CUH_
#define TESSERA_KERNELS_CUDA_DEVICE_UTILS_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launchers.h"

namespace tessera::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// One stored element widened to F32 (exact for every dtype).
template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// An F32 value stored as T, rounded to nearest even, bit for bit the CPU's FloatToBf16 /
// FloatToF16: a NaN becomes the canonical quiet NaN with its sign (the hardware conversion
// would give 0x7fff).
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
__device__ __forceinline__ unsigned short SignOf(float v) {
  return static_cast<unsigned short>((__float_as_uint(v) >> 16) & 0x8000u);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  if (isnan(v)) return __ushort_as_half(static_cast<unsigned short>(SignOf(v) | 0x7e00u));
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  if (isnan(v)) return __ushort_as_bfloat16(static_cast<unsigned short>(SignOf(v) | 0x7fc0u));
  return __float2bfloat16_rn(v);
}
// The value a Cast writes as T: FromFloat, and for F32 output the canonical quiet NaN with its
// sign (the CPU's CanonicalNan), so that casts agree bit for bit whatever the NaN payload.
template <typename T>
__device__ __forceinline__ T CastValue(float v) {
  return FromFloat<T>(v);
}
template <>
__device__ __forceinline__ float CastValue<float>(float v) {
  return isnan(v) ? __uint_as_float((__float_as_uint(v) & 0x80000000u) | 0x7fc00000u) : v;
}

// Element i of a weight buffer of runtime storage type `t`.
__device__ __forceinline__ float LoadStorage(const void* base, Storage t, int64_t i) {
  switch (t) {
    case Storage::kF16:
      return __half2float(static_cast<const __half*>(base)[i]);
    case Storage::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ double WarpSum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 elements. Contains __syncthreads: call from every thread.
template <typename T>
__device__ T BlockSum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < warps ? shared[lane] : T(0);
  return WarpSum(total);
}

__device__ __forceinline__ float BlockMax(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = lane < warps ? shared[lane] : -INFINITY;
  return WarpMax(m);
}

// Blocks for a grid-stride loop over `count` elements.
inline unsigned GridFor(int64_t count, int threads) {
  int64_t blocks = (count + threads - 1) / threads;
  if (blocks > 65535LL * 32) blocks = 65535LL * 32;  // grid-stride covers the rest
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_DEVICE_UTILS_CUH_
