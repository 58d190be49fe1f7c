// Physical-limit probes of the current CUDA device (the one CudaBackend::Create selected), so
// that GPU benchmark figures are reported as ratios, like the CPU's kernels/cpu/machine_probes.h:
// device-memory read bandwidth (the floor of decode: weight bytes / bandwidth per token) and
// cuBLAS's own GEMM rate on a layer-shaped problem (the peer of prefill). Each probe allocates
// its buffers, stream and cuBLAS handle for the measurement and frees them after; timings are
// CUDA events around the timed launches, best of `repeats` after one warm-up.
#ifndef TESSERA_KERNELS_CUDA_CUDA_PROBES_H_
#define TESSERA_KERNELS_CUDA_CUDA_PROBES_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace tessera::cuda {

// Bytes/s read from device memory by a streaming kernel over a buffer of `bytes` (use several
// times the L2: 1 GiB).
absl::StatusOr<double> MeasureDeviceReadBandwidth(size_t bytes, int repeats);

// FLOP/s (2 m n k per product) of y[m, n] = x[m, k] * w[n, k]^T with cuBLAS: weight dtype F32
// runs cublasSgemm; F16 / BF16 run cublasGemmEx with both operands in that dtype, F32
// accumulation and F32 output, which is the CUDA backend's prefill GEMM without its activation
// cast.
absl::StatusOr<double> MeasureGemmFlops(int64_t m, int64_t n, int64_t k, DType weight_dtype,
                                        int repeats);

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_CUDA_PROBES_H_
