// Gemm: y[m, n] (+)= x[m, k] * w[n, k]^T.
//
// F32 weights go to OpenBLAS sgemm. Half-precision weights take one of two paths:
// - few rows (decode, m <= kGemvMaxRows): a fused GEMV that reads each weight row once, widens
//   it to F32 in registers and multiplies it with every x row. Decode at batch 1 is bound by
//   reading the weights, so the kernel's job is to stream them at memory bandwidth.
// - many rows (prefill): blocks of weight rows are widened to F32 into a scratch buffer and
//   multiplied with OpenBLAS sgemm, so prefill runs at the BLAS rate on half-precision weights.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/simd.h"

namespace tessera {
namespace {

constexpr int64_t kGemvMaxRows = 8;
constexpr int64_t kGemvRowBlock = 16;       // weight rows per OpenMP work item
constexpr int64_t kConvertBlockBytes = 4 << 20;  // F32 scratch per sgemm block
// Below this many weight elements a GEMV runs on one thread: waking the team costs more.
constexpr int64_t kParallelMinElements = 1 << 18;

// Dot products of the first `vec_k` (a multiple of kLanes) elements of one weight row, widened
// by `load`, with M activation rows of stride k.
template <int M, typename Load>
inline void WeightRowTimesX(const uint16_t* w, const float* x, int64_t k, int64_t vec_k,
                            float* out, Load load) {
  cpu::VecF acc[M];
  for (int r = 0; r < M; ++r) acc[r] = cpu::Zero();
  for (int64_t i = 0; i < vec_k; i += cpu::kLanes) {
    cpu::VecF wv = load(w + i);
    for (int r = 0; r < M; ++r) acc[r] = cpu::Fma(wv, cpu::LoadF32(x + r * k + i), acc[r]);
  }
  for (int r = 0; r < M; ++r) out[r] = cpu::ReduceSum(acc[r]);
}

template <int M>
void GemvHalf(const GemmArgs& a) {
  const int64_t k = a.x.dim(1), n = a.w.dim(0);
  const float* x = a.x.as<const float>();
  const uint16_t* w = a.w.as<const uint16_t>();
  float* y = a.y.as<float>();
  const bool bf16 = a.w.dtype == DType::kBF16;
  const int64_t vec_k = k - k % cpu::kLanes;
#pragma omp parallel for schedule(static) if (n * k >= kParallelMinElements)
  for (int64_t block = 0; block < (n + kGemvRowBlock - 1) / kGemvRowBlock; ++block) {
    const int64_t end = std::min(n, (block + 1) * kGemvRowBlock);
    for (int64_t j = block * kGemvRowBlock; j < end; ++j) {
      const uint16_t* row = w + j * k;
      float dots[M];
      if (bf16) {
        WeightRowTimesX<M>(row, x, k, vec_k, dots, [](const uint16_t* p) { return cpu::LoadBf16(p); });
      } else {
        WeightRowTimesX<M>(row, x, k, vec_k, dots, [](const uint16_t* p) { return cpu::LoadF16(p); });
      }
      // The k % kLanes tail.
      for (int64_t i = vec_k; i < k; ++i) {
        float wi = cpu::LoadScalar(row, a.w.dtype, i);
        for (int r = 0; r < M; ++r) dots[r] += wi * x[r * k + i];
      }
      for (int r = 0; r < M; ++r) {
        float* dst = y + r * n + j;
        *dst = a.accumulate ? *dst + dots[r] : dots[r];
      }
    }
  }
}

void GemvHalfDispatch(const GemmArgs& a) {
  switch (a.x.dim(0)) {
    case 1: return GemvHalf<1>(a);
    case 2: return GemvHalf<2>(a);
    case 3: return GemvHalf<3>(a);
    case 4: return GemvHalf<4>(a);
    case 5: return GemvHalf<5>(a);
    case 6: return GemvHalf<6>(a);
    case 7: return GemvHalf<7>(a);
    default: return GemvHalf<8>(a);
  }
}

// y[:, j0:j0+rows] (+)= x * w[j0:j0+rows]^T with single-threaded OpenBLAS, widening half
// weights into `scratch` first.
void SgemmRows(const GemmArgs& a, int64_t j0, int64_t rows, std::vector<float>* scratch) {
  const int64_t m = a.x.dim(0), k = a.x.dim(1), n = a.w.dim(0);
  const float* w = nullptr;
  if (a.w.dtype == DType::kF32) {
    w = a.w.as<const float>() + j0 * k;
  } else {
    scratch->resize(static_cast<size_t>(rows * k));
    const size_t elem = DTypeSize(a.w.dtype);
    for (int64_t r = 0; r < rows; ++r) {
      cpu::ConvertRowToF32(a.w.as<const char>() + (j0 + r) * k * elem, a.w.dtype, k,
                           scratch->data() + r * k);
    }
    w = scratch->data();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, rows, k, 1.0f, a.x.as<const float>(), k,
              w, k, a.accumulate ? 1.0f : 0.0f, a.y.as<float>() + j0, n);
}

// OpenBLAS runs single-threaded (see CpuBackend's constructor); the OpenMP team splits the
// weight rows instead, so one thread pool owns the cores. Two pools that both spin-wait for
// work would take turns on the cores and run many times slower.
void ParallelSgemm(const GemmArgs& a) {
  const int64_t m = a.x.dim(0), k = a.x.dim(1), n = a.w.dim(0);
  const int64_t threads = omp_get_max_threads();
  int64_t rows = std::max<int64_t>(1, kConvertBlockBytes / (k * 4));
  rows = std::min(rows, std::max<int64_t>(16, (n + threads - 1) / threads));
  const int64_t blocks = (n + rows - 1) / rows;
#pragma omp parallel if (m * n * k >= kParallelMinElements * 8 && blocks > 1)
  {
    std::vector<float> scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b) {
      SgemmRows(a, b * rows, std::min(rows, n - b * rows), &scratch);
    }
  }
}

}  // namespace

absl::Status CpuBackend::DoGemm(const GemmArgs& a) {
  if (a.x.dim(0) == 0 || a.w.dim(0) == 0) return absl::OkStatus();
  if (a.x.dim(1) == 0) {  // an empty sum: y = 0, or y unchanged when accumulating
    if (!a.accumulate) std::fill_n(a.y.as<float>(), a.y.numel(), 0.0f);
    return absl::OkStatus();
  }
  if (a.w.dtype != DType::kF32 && a.x.dim(0) <= kGemvMaxRows) {
    GemvHalfDispatch(a);
  } else {
    ParallelSgemm(a);
  }
  return absl::OkStatus();
}

}  // namespace tessera
