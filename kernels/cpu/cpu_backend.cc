#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>

namespace tessera {

CpuBackend::CpuBackend() { openblas_set_num_threads(1); }

}  // namespace tessera
