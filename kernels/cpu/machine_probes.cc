#include "kernels/cpu/machine_probes.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/simd.h"

namespace tessera::cpu {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

double MeasureReadBandwidth(size_t bytes, int repeats) {
  const size_t count = bytes / sizeof(float) / 64 * 64;
  float* data = static_cast<float*>(std::aligned_alloc(64, count * sizeof(float)));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < count; ++i) data[i] = static_cast<float>(i & 1023);
  double best = 0.0;
  volatile float sink = 0.0f;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
      VecF a0 = Zero(), a1 = Zero(), a2 = Zero(), a3 = Zero();
#pragma omp for schedule(static)
      for (size_t i = 0; i < count; i += 4 * kLanes) {
        a0 = Fma(LoadF32(data + i), LoadF32(data + i), a0);
        a1 = Fma(LoadF32(data + i + kLanes), LoadF32(data + i + kLanes), a1);
        a2 = Fma(LoadF32(data + i + 2 * kLanes), LoadF32(data + i + 2 * kLanes), a2);
        a3 = Fma(LoadF32(data + i + 3 * kLanes), LoadF32(data + i + 3 * kLanes), a3);
      }
      total += ReduceSum(a0) + ReduceSum(a1) + ReduceSum(a2) + ReduceSum(a3);
    }
    const double seconds = Seconds(start);
    sink = sink + total;
    best = std::max(best, count * sizeof(float) / seconds);
  }
  std::free(data);
  return best;
}

double MeasureSgemmFlops(int64_t m, int64_t n, int64_t k, int repeats) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, b.data(), k,
                0.0f, c.data(), n);
    best = std::max(best, 2.0 * m * n * k / Seconds(start));
  }
  return best;
}

}  // namespace tessera::cpu
