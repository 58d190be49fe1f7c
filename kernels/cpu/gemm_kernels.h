// The CPU GEMM's inner kernels, one set per instruction set (kernels/cpu/gemm_isa_*.cc). Internal
// to kernels/cpu; kernels/cpu/gemm.cc picks the set for cpu::GemmIsa() and splits the work over
// the OpenMP team.
#ifndef TESSERA_KERNELS_CPU_GEMM_KERNELS_H_
#define TESSERA_KERNELS_CPU_GEMM_KERNELS_H_

#include <cstdint>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/dtype.h"

namespace tessera::cpu {

// y[r, j] (+)= sum_i x[r, i] * w[j, i] for r < m, j in [row_begin, row_end).
// x: [m, k] F32, row stride k (m at most kGemvMaxRows); w: [n, k] of `w_dtype` (F32, BF16 or
// F16), row stride k; y: [m, ldy] F32. Accumulation is F32 in vector lanes, summed at the end.
struct GemvTask {
  const float* x = nullptr;
  int64_t m = 0;
  int64_t k = 0;
  const void* w = nullptr;
  DType w_dtype = DType::kF32;
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;
};

inline constexpr int64_t kGemvMaxRows = 8;

struct GemmKernelSet {
  CpuIsa isa;
  // Rows [row_begin, row_end) of the task's product, on the calling thread.
  void (*gemv_rows)(const GemvTask& task, int64_t row_begin, int64_t row_end);
  // dst[i] = float(src[i]) for i < count; src of dtype F32, BF16 or F16.
  void (*widen)(const void* src, DType dtype, int64_t count, float* dst);
};

const GemmKernelSet& ScalarGemmKernels();
const GemmKernelSet& Avx2GemmKernels();
const GemmKernelSet& Avx512GemmKernels();

// The set for `isa`.
const GemmKernelSet& GemmKernelsFor(CpuIsa isa);

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_GEMM_KERNELS_H_
