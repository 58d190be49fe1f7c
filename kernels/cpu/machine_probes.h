// Physical-limit probes of this machine, measured in the same run as a benchmark so that
// figures are reported as ratios: memory read bandwidth and OpenBLAS's own sgemm rate.
#ifndef TESSERA_KERNELS_CPU_MACHINE_PROBES_H_
#define TESSERA_KERNELS_CPU_MACHINE_PROBES_H_

#include <cstddef>
#include <cstdint>

namespace tessera::cpu {

// Best-of-`repeats` read bandwidth in bytes/s over a buffer of `bytes` (use several times the
// last-level cache), read by all OpenMP threads with vector loads.
double MeasureReadBandwidth(size_t bytes, int repeats);

// Best-of-`repeats` FLOP/s of cblas_sgemm on row-major (m x k) * (k x n)^T.
double MeasureSgemmFlops(int64_t m, int64_t n, int64_t k, int repeats);

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_MACHINE_PROBES_H_
