// The AVX-512 (F, BW, VL) GEMM kernels: 16 F32 lanes, BF16 widened by a shift, F16 by
// vcvtph2ps. Chosen at run time only on CPUs that report AVX-512 F, BW and VL.
#include <immintrin.h>

#include "kernels/cpu/gemm_kernels.h"

namespace tessera::cpu {
namespace {

#define TESSERA_GEMM_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))

struct V {
  using Reg = __m512;
  static constexpr int kLanes = 16;
  TESSERA_GEMM_TARGET static Reg Zero() { return _mm512_setzero_ps(); }
  TESSERA_GEMM_TARGET static Reg LoadF32(const float* p) { return _mm512_loadu_ps(p); }
  TESSERA_GEMM_TARGET static Reg LoadBf16(const uint16_t* p) {
    const __m512i wide =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  TESSERA_GEMM_TARGET static Reg LoadF16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  TESSERA_GEMM_TARGET static Reg Fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  TESSERA_GEMM_TARGET static float Sum(Reg v) { return _mm512_reduce_add_ps(v); }
  TESSERA_GEMM_TARGET static void Pin(Reg& v) { asm("" : "+v"(v)); }
  TESSERA_GEMM_TARGET static void Store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
};

#include "kernels/cpu/gemv_tiles.h"

#undef TESSERA_GEMM_TARGET

}  // namespace

const GemmKernelSet& Avx512GemmKernels() {
  static const GemmKernelSet set{CpuIsa::kAvx512, &GemvRows, &Widen};
  return set;
}

}  // namespace tessera::cpu
