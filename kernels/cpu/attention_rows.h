// Row helpers shared by the CPU attention kernels (attention.cc, sparse_attention.cc): dot
// products of an F32 query with a cache row and scaled row updates, for F32 / F16 / BF16 caches.
// Half-precision elements are widened to F32 exactly as they are loaded into the vector lanes.
#ifndef TESSERA_KERNELS_CPU_ATTENTION_ROWS_H_
#define TESSERA_KERNELS_CPU_ATTENTION_ROWS_H_

#include <cmath>
#include <cstdint>

#include "kernels/cpu/simd.h"
#include "kernels/dtype.h"

namespace tessera {
namespace cpu_attention {

// kLanes elements of a cache row from element i, and one element, widened to F32 (exactly).
template <DType kCache>
cpu::VecF LoadLanes(const void* row, int64_t i) {
  if constexpr (kCache == DType::kBF16) {
    return cpu::LoadBf16(static_cast<const uint16_t*>(row) + i);
  } else {
    return cpu::LoadF16(static_cast<const uint16_t*>(row) + i);
  }
}
template <DType kCache>
float LoadOne(const void* row, int64_t i) {
  if constexpr (kCache == DType::kBF16) {
    return Bf16ToFloat(static_cast<const uint16_t*>(row)[i]);
  } else {
    return F16ToFloat(static_cast<const uint16_t*>(row)[i]);
  }
}

// Sum of q[d] * k[d] over `count` elements of a cache row of dtype kCache. Half-precision rows
// are widened lane by lane inside a loop shaped as DotF32's (same lanes and order), without a
// buffer or a call per row; the compiler may fuse the tail's products differently, so results
// can differ from DotF32 on the widened row in the last bits.
template <DType kCache>
float Dot(const float* q, const void* k, int64_t count) {
  if constexpr (kCache == DType::kF32) {
    return cpu::DotF32(q, static_cast<const float*>(k), count);
  } else {
    cpu::VecF acc = cpu::Zero();
    int64_t d = 0;
    for (; d + cpu::kLanes <= count; d += cpu::kLanes) {
      acc = cpu::Fma(cpu::LoadF32(q + d), LoadLanes<kCache>(k, d), acc);
    }
    float sum = cpu::ReduceSum(acc);
    for (; d < count; ++d) sum += q[d] * LoadOne<kCache>(k, d);
    return sum;
  }
}

// out[d] += p * v[d] over `count` elements of a cache row of dtype kCache: the F32 loop as it
// always was; half-precision rows as explicit multiply-adds of the widened elements.
template <DType kCache>
void AddScaledRow(float p, const void* v, int64_t count, float* out) {
  if constexpr (kCache == DType::kF32) {
    const float* vf = static_cast<const float*>(v);
    for (int64_t d = 0; d < count; ++d) out[d] += p * vf[d];
  } else {
    const cpu::VecF pv = cpu::Broadcast(p);
    int64_t d = 0;
    for (; d + cpu::kLanes <= count; d += cpu::kLanes) {
      cpu::StoreF32(out + d, cpu::Fma(pv, LoadLanes<kCache>(v, d), cpu::LoadF32(out + d)));
    }
    for (; d < count; ++d) out[d] = std::fma(p, LoadOne<kCache>(v, d), out[d]);
  }
}

}  // namespace cpu_attention

// The sparse variants of AttentionArgs::variant and its counters (sparse_attention.cc).
struct AttentionArgs;
void AttendSparse(const AttentionArgs& a);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_ATTENTION_ROWS_H_
