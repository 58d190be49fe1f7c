// CPU kernel figures on this machine: the GEMV at decode shapes on every instruction-set path
// the CPU supports (weight GB/s, against the memory read bandwidth measured in the same run),
// and decode attention over 1k to 32k cached positions (ms per token and layer).
//
//   build/bench/tessera_cpu_kernels_bench [--threads N]
//
// A benchmark, not a test: nothing is asserted, and it is not in CI.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/machine_probes.h"

namespace tessera {
namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of 5 passes over `mats` distinct [n, k] weight matrices (more than the last-level cache
// when mats * n * k * size is large), m activation rows: weight bytes per second.
double GemvBytesPerSecond(Backend& b, int64_t m, int64_t n, int64_t k, DType dtype, int mats,
                          int inner) {
  const size_t elem = DTypeSize(dtype);
  std::vector<char> w(mats * n * k * elem);
  for (size_t i = 0; i < w.size(); i += 2) w[i + 1] = 0x3c;  // ~1.0 in BF16 / F16 halves
  std::vector<float> x(m * k, 0.01f), y(m * n);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < inner; ++it) {
      for (int i = 0; i < mats; ++i) {
        const absl::Status s = b.Gemm({TensorView::Of(x.data(), DType::kF32, {m, k}),
                                       TensorView::Of(w.data() + i * n * k * elem, dtype, {n, k}),
                                       TensorView::Of(y.data(), DType::kF32, {m, n}), false});
        if (!s.ok()) {
          std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
          std::exit(1);
        }
      }
    }
    best = std::min(best, Seconds(t0));
  }
  return static_cast<double>(inner) * mats * n * k * elem / best;
}

// Best of 7 single-token decode attentions over `len` cached positions, F32 cache: seconds.
double DecodeAttentionSeconds(Backend& b, int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int64_t len) {
  std::vector<float> k(len * kv_heads * head_dim, 0.01f), v(k.size(), 0.02f);
  std::vector<float> q(heads * head_dim, 0.1f), out(q.size()), lse(heads);
  int32_t slot = 0, entry = static_cast<int32_t>(len - 1);
  const AttentionArgs a{TensorView::Of(q.data(), DType::kF32, {1, heads, head_dim}),
                        TensorView::Of(k.data(), DType::kF32, {1, len, kv_heads, head_dim}),
                        TensorView::Of(v.data(), DType::kF32, {1, len, kv_heads, head_dim}),
                        TensorView::Of(&slot, DType::kI32, {1}),
                        TensorView::Of(&entry, DType::kI32, {1}),
                        TensorView::Of(out.data(), DType::kF32, {1, heads, head_dim}),
                        TensorView::Of(lse.data(), DType::kF32, {1, heads}),
                        1.0f / 8};
  double best = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!b.Attention(a).ok()) std::exit(1);
    best = std::min(best, Seconds(t0));
  }
  return best;
}

int Main(int argc, char** argv) {
  int threads = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[i + 1]);
  }
  if (threads > 0) CpuBackend::SetThreads(threads);
  auto backend = MakeBackend(BackendKind::kCpu);
  if (!backend.ok()) return 1;
  Backend& b = **backend;
  const double bandwidth = cpu::MeasureReadBandwidth(size_t{1} << 30, 5);
  std::printf("threads %d, detected %s, memory read bandwidth %.1f GB/s\n\n", CpuBackend::threads(),
              std::string(cpu::CpuIsaName(cpu::DetectedCpuIsa())).c_str(), bandwidth / 1e9);

  std::printf(
      "GEMV, weights out of cache (40 matrices), GB/s of weights and fraction of bandwidth\n");
  std::printf("| isa | dtype | n x k | m=1 | m=4 | m=8 |\n|---|---|---|---:|---:|---:|\n");
  struct Shape {
    int64_t n, k;
    int mats, inner;
  };
  for (int isa = 0; isa <= static_cast<int>(cpu::DetectedCpuIsa()); ++isa) {
    if (!cpu::ForceGemmIsa(static_cast<cpu::CpuIsa>(isa)).ok()) return 1;
    for (DType dtype : {DType::kBF16, DType::kF32}) {
      for (Shape s : {Shape{5632, 2048, 20, 1}, Shape{704, 256, 40, 50}}) {
        std::printf("| %s | %s | %lld x %lld |",
                    std::string(cpu::CpuIsaName(cpu::GemmIsa())).c_str(),
                    std::string(DTypeName(dtype)).c_str(), static_cast<long long>(s.n),
                    static_cast<long long>(s.k));
        for (int64_t m : {1, 4, 8}) {
          const double r = GemvBytesPerSecond(b, m, s.n, s.k, dtype, s.mats, s.inner);
          std::printf(" %.1f (%.2f) |", r / 1e9, r / bandwidth);
        }
        std::printf("\n");
      }
    }
  }
  if (!cpu::ForceGemmIsa(cpu::DetectedCpuIsa()).ok()) return 1;

  std::printf("\nDecode attention, one token, F32 cache: ms per layer\n");
  std::printf(
      "| heads / kv heads x head_dim | 1024 | 4096 | 16384 | 32768 |\n|---|---:|---:|---:|---:|\n");
  struct Heads {
    int64_t heads, kv_heads, head_dim;
  };
  for (Heads h : {Heads{32, 4, 64}, Heads{16, 2, 64}, Heads{8, 2, 32}, Heads{8, 1, 64}}) {
    std::printf("| %lld / %lld x %lld |", static_cast<long long>(h.heads),
                static_cast<long long>(h.kv_heads), static_cast<long long>(h.head_dim));
    for (int64_t len : {1024, 4096, 16384, 32768}) {
      std::printf(" %.3f |", 1e3 * DecodeAttentionSeconds(b, h.heads, h.kv_heads, h.head_dim, len));
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
