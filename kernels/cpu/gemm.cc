// Gemm: y[m, n] (+)= x[m, k] * w[n, k]^T.
//
// Two paths, for weights of any dtype (F32, BF16, F16):
// - few rows (decode, m <= kGemvMaxRows): a GEMV that reads each weight row once, widens it to
//   F32 in registers and multiplies it with every x row (kernels/cpu/gemv_tiles.h). Decode is
//   bound by reading the weights, so the kernel's job is to stream them at memory bandwidth.
// - many rows (prefill): blocks of weight rows (widened to F32 into a scratch buffer when they
//   are half precision) multiplied with OpenBLAS sgemm.
// The inner kernels come from the instruction set chosen at run time (cpu::GemmIsa()).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/gemm_kernels.h"

namespace tessera {
namespace cpu {

const GemmKernelSet& GemmKernelsFor(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return Avx512GemmKernels();
    case CpuIsa::kAvx2:
      return Avx2GemmKernels();
    case CpuIsa::kScalar:
      break;
  }
  return ScalarGemmKernels();
}

}  // namespace cpu

namespace {

constexpr int64_t kGemvRowBlock = 16;            // weight rows per OpenMP work item
constexpr int64_t kConvertBlockBytes = 4 << 20;  // F32 scratch per sgemm block
// Below this many weight elements a GEMV runs on one thread: waking the team costs more. Small
// (16 KiB of BF16): a decode step of a small model is a chain of small GEMVs whose weights sit in
// the last-level cache, and splitting each over the cores is most of what makes it fast.
constexpr int64_t kGemvParallelMinElements = 1 << 12;
// Below this many multiply-adds an sgemm runs on one thread.
constexpr int64_t kSgemmParallelMinWork = 1 << 21;

void Gemv(const GemmArgs& a, const cpu::GemmKernelSet& kernels) {
  const int64_t n = a.w.dim(0);
  const cpu::GemvTask task{a.x.as<const float>(), a.x.dim(0), a.x.dim(1), a.w.data, a.w.dtype,
                           a.y.as<float>(), n, a.accumulate};
  const int64_t blocks = (n + kGemvRowBlock - 1) / kGemvRowBlock;
#pragma omp parallel for schedule(static) if (n * task.k >= kGemvParallelMinElements)
  for (int64_t block = 0; block < blocks; ++block) {
    kernels.gemv_rows(task, block * kGemvRowBlock, std::min(n, (block + 1) * kGemvRowBlock));
  }
}

// y[:, j0:j0+rows] (+)= x * w[j0:j0+rows]^T with single-threaded OpenBLAS, widening half
// weights into `scratch` first.
void SgemmRows(const GemmArgs& a, const cpu::GemmKernelSet& kernels, int64_t j0, int64_t rows,
               std::vector<float>* scratch) {
  const int64_t m = a.x.dim(0), k = a.x.dim(1), n = a.w.dim(0);
  const float* w = nullptr;
  if (a.w.dtype == DType::kF32) {
    w = a.w.as<const float>() + j0 * k;
  } else {
    scratch->resize(static_cast<size_t>(rows * k));
    kernels.widen(a.w.as<const char>() + j0 * k * DTypeSize(a.w.dtype), a.w.dtype, rows * k,
                  scratch->data());
    w = scratch->data();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, rows, k, 1.0f, a.x.as<const float>(), k,
              w, k, a.accumulate ? 1.0f : 0.0f, a.y.as<float>() + j0, n);
}

// OpenBLAS runs single-threaded (see CpuBackend's constructor); the OpenMP team splits the
// weight rows instead, so one thread pool owns the cores. Two pools that both spin-wait for
// work would take turns on the cores and run many times slower.
void ParallelSgemm(const GemmArgs& a, const cpu::GemmKernelSet& kernels) {
  const int64_t m = a.x.dim(0), k = a.x.dim(1), n = a.w.dim(0);
  const int64_t threads = omp_get_max_threads();
  int64_t rows = std::max<int64_t>(1, kConvertBlockBytes / (k * 4));
  rows = std::min(rows, std::max<int64_t>(16, (n + threads - 1) / threads));
  const int64_t blocks = (n + rows - 1) / rows;
#pragma omp parallel if (m * n * k >= kSgemmParallelMinWork && blocks > 1)
  {
    // Kept by each thread from call to call: a fresh buffer would be mapped, page-faulted,
    // zeroed and unmapped by every GEMM (4 MiB per thread), a fifth of a BF16 prefill.
    thread_local std::vector<float> scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b) {
      SgemmRows(a, kernels, b * rows, std::min(rows, n - b * rows), &scratch);
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
  const cpu::GemmKernelSet& kernels = cpu::GemmKernelsFor(cpu::GemmIsa());
  if (a.x.dim(0) <= cpu::kGemvMaxRows) {
    Gemv(a, kernels);
  } else {
    ParallelSgemm(a, kernels);
  }
  return absl::OkStatus();
}

}  // namespace tessera
