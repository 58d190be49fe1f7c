// The vector instruction sets the CPU GEMM kernels can use, detected when the process starts.
//
// The GEMM / GEMV kernels are compiled once per instruction set (kernels/cpu/gemm_isa_*.cc, each
// function carrying its own target attribute) and one set is chosen at run time: the widest the
// CPU and the OS support, unless a test forces a narrower one. The rest of the binary does not
// depend on the choice, so a build without -march=native (TESSERA_NATIVE=OFF) runs on any x86-64
// and still multiplies with AVX2 or AVX-512 where the machine has them.
#ifndef TESSERA_KERNELS_CPU_CPU_ISA_H_
#define TESSERA_KERNELS_CPU_CPU_ISA_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tessera::cpu {

// Ordered from narrowest to widest; a CPU that supports one supports every earlier one.
enum class CpuIsa {
  kScalar,  // portable C++ loops
  kAvx2,    // AVX2 + FMA + F16C, 8 F32 lanes
  kAvx512,  // AVX-512 F/BW/VL, 16 F32 lanes
};

// "scalar", "avx2", "avx512".
absl::string_view CpuIsaName(CpuIsa isa);

// The widest instruction set this CPU and OS support.
CpuIsa DetectedCpuIsa();

// The instruction set the GEMM kernels use now: DetectedCpuIsa() unless ForceGemmIsa chose
// another.
CpuIsa GemmIsa();

// Makes the GEMM kernels use `isa` (tests of the narrower paths). FailedPrecondition when the
// CPU does not support it. Not thread-safe against concurrent GEMMs.
absl::Status ForceGemmIsa(CpuIsa isa);

}  // namespace tessera::cpu

#endif  // TESSERA_KERNELS_CPU_CPU_ISA_H_
