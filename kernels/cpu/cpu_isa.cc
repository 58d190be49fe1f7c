#include "kernels/cpu/cpu_isa.h"

#include <atomic>

#include "absl/strings/str_cat.h"

namespace tessera::cpu {
namespace {

CpuIsa Detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c")) {
    return CpuIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return CpuIsa::kAvx2;
  }
#endif
  return CpuIsa::kScalar;
}

std::atomic<int>& ForcedIsa() {
  static std::atomic<int> forced{-1};
  return forced;
}

}  // namespace

absl::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

CpuIsa DetectedCpuIsa() {
  static const CpuIsa detected = Detect();
  return detected;
}

CpuIsa GemmIsa() {
  const int forced = ForcedIsa().load(std::memory_order_relaxed);
  return forced < 0 ? DetectedCpuIsa() : static_cast<CpuIsa>(forced);
}

absl::Status ForceGemmIsa(CpuIsa isa) {
  if (static_cast<int>(isa) > static_cast<int>(DetectedCpuIsa())) {
    return absl::FailedPreconditionError(absl::StrCat("this CPU cannot run the ", CpuIsaName(isa),
                                                      " GEMM kernels (it supports up to ",
                                                      CpuIsaName(DetectedCpuIsa()), ")"));
  }
  ForcedIsa().store(static_cast<int>(isa), std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace tessera::cpu
