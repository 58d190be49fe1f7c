// Vector helpers for the CPU kernels: load F32 / BF16 / F16 elements as F32 lanes and fused
// multiply-add. AVX-512 when the compiler targets it, else AVX2+FMA+F16C, else scalar loops.
// Internal to kernels/cpu.
#ifndef TESSERA_KERNELS_CPU_SIMD_H_
#define TESSERA_KERNELS_CPU_SIMD_H_

#include <cstdint>

#include "kernels/dtype.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define TESSERA_SIMD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TESSERA_SIMD_AVX2 1
#endif

namespace tessera::cpu {

#if defined(TESSERA_SIMD_AVX512)
constexpr int kLanes = 16;
using VecF = __m512;
inline VecF Zero() { return _mm512_setzero_ps(); }
inline VecF Broadcast(float x) { return _mm512_set1_ps(x); }
inline VecF LoadF32(const float* p) { return _mm512_loadu_ps(p); }
inline void StoreF32(float* p, VecF v) { _mm512_storeu_ps(p, v); }
inline VecF LoadBf16(const uint16_t* p) {
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline VecF LoadF16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline VecF Fma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
inline float ReduceSum(VecF v) { return _mm512_reduce_add_ps(v); }
#elif defined(TESSERA_SIMD_AVX2)
constexpr int kLanes = 8;
using VecF = __m256;
inline VecF Zero() { return _mm256_setzero_ps(); }
inline VecF Broadcast(float x) { return _mm256_set1_ps(x); }
inline VecF LoadF32(const float* p) { return _mm256_loadu_ps(p); }
inline void StoreF32(float* p, VecF v) { _mm256_storeu_ps(p, v); }
inline VecF LoadBf16(const uint16_t* p) {
  __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline VecF LoadF16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline VecF Fma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
inline float ReduceSum(VecF v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#else
constexpr int kLanes = 1;
using VecF = float;
inline VecF Zero() { return 0.0f; }
inline VecF Broadcast(float x) { return x; }
inline VecF LoadF32(const float* p) { return *p; }
inline void StoreF32(float* p, VecF v) { *p = v; }
inline VecF LoadBf16(const uint16_t* p) { return Bf16ToFloat(*p); }
inline VecF LoadF16(const uint16_t* p) { return F16ToFloat(*p); }
inline VecF Fma(VecF a, VecF b, VecF c) { return a * b + c; }
inline float ReduceSum(VecF v) { return v; }
#endif

// One weight element as F32, for tails and scalar paths.
inline float LoadScalar(const void* base, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(base)[i];
    case DType::kBF16:
      return Bf16ToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kF16:
      return F16ToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kI32:
      return static_cast<float>(static_cast<const int32_t*>(base)[i]);
    case DType::kU8:
      return static_cast<float>(static_cast<const uint8_t*>(base)[i]);
  }
  return 0.0f;
}

// Converts `count` elements of a weight row to F32.
void ConvertRowToF32(const void* src, DType dtype, int64_t count, float* dst);

// Sum of x[i] * y[i] over `count` F32 elements.
float DotF32(const float* x, const float* y, int64_t count);

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_SIMD_H_
