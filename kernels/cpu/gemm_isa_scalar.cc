// The portable GEMM kernels: one F32 lane, for CPUs without AVX2 (and the fallback tests).
#include "kernels/cpu/gemm_kernels.h"

namespace tessera::cpu {
namespace {

#define TESSERA_GEMM_TARGET

struct V {
  using Reg = float;
  static constexpr int kLanes = 1;
  static Reg Zero() { return 0.0f; }
  static Reg LoadF32(const float* p) { return *p; }
  static Reg LoadBf16(const uint16_t* p) { return Bf16ToFloat(*p); }
  static Reg LoadF16(const uint16_t* p) { return F16ToFloat(*p); }
  static Reg Fma(Reg a, Reg b, Reg c) { return a * b + c; }
  static float Sum(Reg v) { return v; }
  static void Pin(Reg&) {}
  static void Store(float* p, Reg v) { *p = v; }
};

#include "kernels/cpu/gemv_tiles.h"

#undef TESSERA_GEMM_TARGET

}  // namespace

const GemmKernelSet& ScalarGemmKernels() {
  static const GemmKernelSet set{CpuIsa::kScalar, &GemvRows, &Widen};
  return set;
}

}  // namespace tessera::cpu
