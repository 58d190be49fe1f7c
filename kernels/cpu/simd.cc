#include "kernels/cpu/simd.h"

#include <cstring>

namespace tessera::cpu {

void ConvertRowToF32(const void* src, DType dtype, int64_t count, float* dst) {
  if (dtype == DType::kF32) {
    std::memcpy(dst, src, count * sizeof(float));
    return;
  }
  const uint16_t* p = static_cast<const uint16_t*>(src);
  int64_t i = 0;
#if defined(TESSERA_SIMD_AVX512) || defined(TESSERA_SIMD_AVX2)
  for (; i + kLanes <= count; i += kLanes) {
    VecF v = dtype == DType::kBF16 ? LoadBf16(p + i) : LoadF16(p + i);
#if defined(TESSERA_SIMD_AVX512)
    _mm512_storeu_ps(dst + i, v);
#else
    _mm256_storeu_ps(dst + i, v);
#endif
  }
#endif
  for (; i < count; ++i) dst[i] = LoadScalar(src, dtype, i);
}

float DotF32(const float* x, const float* y, int64_t count) {
  VecF acc = Zero();
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) acc = Fma(LoadF32(x + i), LoadF32(y + i), acc);
  float sum = ReduceSum(acc);
  for (; i < count; ++i) sum += x[i] * y[i];
  return sum;
}

}  // namespace tessera::cpu
