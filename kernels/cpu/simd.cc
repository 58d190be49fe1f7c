#include "kernels/cpu/simd.h"

#include "kernels/cpu/gemm_kernels.h"

namespace tessera::cpu {

// One widening for the whole backend: the run-time instruction set's (kernels/cpu/gemv_tiles.h).
void ConvertRowToF32(const void* src, DType dtype, int64_t count, float* dst) {
  GemmKernelsFor(GemmIsa()).widen(src, dtype, count, dst);
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
