// tessera_cuda_probe: prints the CUDA device's measured limits as one JSON object, for
// scripts/gpu_check.sh (until `tessera bench --backend cuda` reports them itself):
//   tessera_cuda_probe [m n k]   (the GEMM shape, default 128 11008 4096: a 7B MLP prefill)
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_probes.h"

int main(int argc, char** argv) {
  const int64_t m = argc > 3 ? std::atoll(argv[1]) : 128;
  const int64_t n = argc > 3 ? std::atoll(argv[2]) : 11008;
  const int64_t k = argc > 3 ? std::atoll(argv[3]) : 4096;
  auto backend = tessera::CudaBackend::Create(0);
  if (!backend.ok()) {
    std::fprintf(stderr, "tessera_cuda_probe: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  auto bandwidth = tessera::cuda::MeasureDeviceReadBandwidth(size_t{2} << 30, 10);
  auto bf16 = tessera::cuda::MeasureGemmFlops(m, n, k, tessera::DType::kBF16, 10);
  auto f32 = tessera::cuda::MeasureGemmFlops(m, n, k, tessera::DType::kF32, 5);
  for (const absl::Status& s : {bandwidth.status(), bf16.status(), f32.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "tessera_cuda_probe: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf(
      "{\"device\": \"%s\", \"device_read_bandwidth_bytes_per_s\": %.6g, "
      "\"gemm_shape\": [%lld, %lld, %lld], \"cublas_bf16_gemm_flops\": %.6g, "
      "\"cublas_sgemm_flops\": %.6g}\n",
      (*backend)->Description().c_str(), *bandwidth, static_cast<long long>(m),
      static_cast<long long>(n), static_cast<long long>(k), *bf16, *f32);
  return 0;
}
