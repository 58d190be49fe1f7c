// Elementwise ops: SiLU-multiply, add, lerp, average, counter-based dropout, dtype cast.
#include <cmath>

#include "kernels/philox.h"

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/simd.h"

namespace tessera {
namespace {

// Element i of `out` (F32, or F16 / BF16 rounded to nearest even) set to v.
void StoreRounded(const TensorView& out, int64_t i, float v) {
  switch (out.dtype) {
    case DType::kBF16:
      out.as<uint16_t>()[i] = FloatToBf16(v);
      break;
    case DType::kF16:
      out.as<uint16_t>()[i] = FloatToF16(v);
      break;
    default:
      out.as<float>()[i] = v;
  }
}

}  // namespace

absl::Status CpuBackend::DoSiluMul(const SiluMulArgs& a) {
  const int64_t count = a.gate.numel();
  const float* gate = a.gate.as<const float>();
  const float* up = a.up.as<const float>();
  float* out = a.out.as<float>();
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoAdd(const AddArgs& a) {
  const int64_t count = a.a.numel();
  const float* x = a.a.as<const float>();
  const float* y = a.b.as<const float>();
  float* out = a.out.as<float>();
  for (int64_t i = 0; i < count; ++i) out[i] = x[i] + y[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::DoLerp(const LerpArgs& a) {
  const int64_t count = a.a.numel();
  const float* x = a.a.as<const float>();
  const float* y = a.b.as<const float>();
  float* out = a.out.as<float>();
  // One rounding after the difference, as the CUDA kernel (fmaf); exactly x where y == x (equal
  // infinities included).
  for (int64_t i = 0; i < count; ++i) {
    out[i] = y[i] == x[i] ? x[i] : std::fma(a.weight, y[i] - x[i], x[i]);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoAverage(const AverageArgs& a) {
  const int64_t count = a.a.numel();
  for (int64_t i = 0; i < count; ++i) {
    StoreRounded(a.out, i,
                 (cpu::LoadScalar(a.a.data, a.a.dtype, i) + cpu::LoadScalar(a.b.data, a.b.dtype, i)) *
                     0.5f);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoPhiloxDropout(const PhiloxDropoutArgs& a) {
  const int64_t n = a.x.dim(0), h = a.x.dim(1);
  const uint32_t* words = a.row_words.as<const uint32_t>();
#pragma omp parallel for schedule(static) if (n * h > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t* w = words + 4 * i;
    float* row = a.x.as<float>() + i * h;
    for (int64_t j = 0; j < h; j += 4) {
      uint32_t c[4] = {static_cast<uint32_t>((a.column_offset + j) / 4), w[2], w[3], a.stream};
      PhiloxRounds(c, w[0], w[1]);
      for (int64_t lane = 0; lane < 4 && j + lane < h; ++lane) {
        if (UniformFromBits(c[lane]) < a.rate) row[j + lane] = 0.0f;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoCast(const CastArgs& a) {
  if (a.out.dtype == DType::kI32 || a.out.dtype == DType::kU8) {
    return absl::InvalidArgumentError("Cast: integer output");
  }
  const int64_t count = a.in.numel();
  for (int64_t i = 0; i < count; ++i) {
    const float v = cpu::LoadScalar(a.in.data, a.in.dtype, i);
    StoreRounded(a.out, i, std::isnan(v) && a.out.dtype == DType::kF32 ? CanonicalNan(v) : v);
  }
  return absl::OkStatus();
}

}  // namespace tessera
