#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

namespace tessera {

CpuBackend::CpuBackend() { openblas_set_num_threads(1); }

void CpuBackend::SetThreads(int n) { omp_set_num_threads(n); }

int CpuBackend::threads() { return omp_get_max_threads(); }

}  // namespace tessera
