// RMSNorm as Hugging Face's LlamaRMSNorm computes it in F32:
// x * rsqrt(mean(x^2) + eps) * weight.
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/simd.h"

namespace tessera {

absl::Status CpuBackend::DoRmsNorm(const RmsNormArgs& a) {
  const int64_t n = a.in.dim(0), dim = a.in.dim(1);
  std::vector<float> weight(dim);
  cpu::ConvertRowToF32(a.weight.data, a.weight.dtype, dim, weight.data());
#pragma omp parallel for schedule(static) if (n * dim >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float* x = a.in.as<const float>() + i * dim;
    float* y = a.out.as<float>() + i * dim;
    double sum_sq = 0.0;
    for (int64_t j = 0; j < dim; ++j) sum_sq += static_cast<double>(x[j]) * x[j];
    const float inv_rms = 1.0f / std::sqrt(static_cast<float>(sum_sq / dim) + a.eps);
    for (int64_t j = 0; j < dim; ++j) y[j] = weight[j] * (x[j] * inv_rms);
  }
  return absl::OkStatus();
}

}  // namespace tessera
