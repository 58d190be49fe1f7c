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
  const size_t count = bytes / sizeof(float) / (8 * kLanes) * (8 * kLanes);
  float* data = static_cast<float*>(std::aligned_alloc(64, count * sizeof(float)));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < count; ++i) data[i] = static_cast<float>(i & 1023);
  double best = 0.0;
  volatile float sink = 0.0f;
  float unit = 1.0f;
  const VecF one = LoadF32(std::vector<float>(kLanes, unit).data());
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
      // Eight independent accumulators keep the loads, not the adds, the bottleneck.
      VecF acc[8];
      for (VecF& v : acc) v = Zero();
#pragma omp for schedule(static)
      for (size_t i = 0; i < count; i += 8 * kLanes) {
        for (int u = 0; u < 8; ++u) acc[u] = Fma(LoadF32(data + i + u * kLanes), one, acc[u]);
      }
      for (VecF& v : acc) total += ReduceSum(v);
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
  // OpenBLAS's own threading, on every core, is the peer; restore the caller's setting after.
  const int previous = openblas_get_num_threads();
  openblas_set_num_threads(omp_get_max_threads());
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, b.data(), k,
                0.0f, c.data(), n);
    best = std::max(best, 2.0 * m * n * k / Seconds(start));
  }
  openblas_set_num_threads(previous);
  return best;
}

}  // namespace tessera::cpu
