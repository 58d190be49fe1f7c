// The AVX2 + FMA + F16C GEMM kernels: 8 F32 lanes, BF16 widened by a shift, F16 by vcvtph2ps.
#include <immintrin.h>

#include "kernels/cpu/gemm_kernels.h"

namespace tessera::cpu {
namespace {

#define TESSERA_GEMM_TARGET __attribute__((target("avx2,fma,f16c")))

struct V {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  TESSERA_GEMM_TARGET static Reg Zero() { return _mm256_setzero_ps(); }
  TESSERA_GEMM_TARGET static Reg LoadF32(const float* p) { return _mm256_loadu_ps(p); }
  TESSERA_GEMM_TARGET static Reg LoadBf16(const uint16_t* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  TESSERA_GEMM_TARGET static Reg LoadF16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  TESSERA_GEMM_TARGET static Reg Fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  TESSERA_GEMM_TARGET static float Sum(Reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  TESSERA_GEMM_TARGET static void Pin(Reg& v) { asm("" : "+x"(v)); }
  TESSERA_GEMM_TARGET static void Store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
};

#include "kernels/cpu/gemv_tiles.h"

#undef TESSERA_GEMM_TARGET

}  // namespace

const GemmKernelSet& Avx2GemmKernels() {
  static const GemmKernelSet set{CpuIsa::kAvx2, &GemvRows, &Widen};
  return set;
}

}  // namespace tessera::cpu
