#include "kernels/cpu/cpu_isa.h"

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "absl/strings/str_cat.h"

namespace tessera::cpu {
namespace {

// CPUID and XGETBV directly (GCC's and clang's __builtin_cpu_supports know different feature
// names): the instructions, and the OS saving the vector registers they use.
CpuIsa Detect() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return CpuIsa::kScalar;
  const bool fma = ecx & (1u << 12), osxsave = ecx & (1u << 27), avx = ecx & (1u << 28);
  const bool f16c = ecx & (1u << 29);
  if (!osxsave || !avx) return CpuIsa::kScalar;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6) != 0x6) return CpuIsa::kScalar;  // XMM and YMM state
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return CpuIsa::kScalar;
  const bool avx2 = ebx & (1u << 5), avx512f = ebx & (1u << 16), avx512bw = ebx & (1u << 30);
  const bool avx512vl = ebx & (1u << 31);
  if (!avx2 || !fma || !f16c) return CpuIsa::kScalar;
  if (avx512f && avx512bw && avx512vl && (xcr0_lo & 0xe0) == 0xe0) return CpuIsa::kAvx512;
  return CpuIsa::kAvx2;
#else
  return CpuIsa::kScalar;
#endif
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
