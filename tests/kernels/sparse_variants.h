// The valid (kind, placement, compensation, VMC) combinations of the sparse attention variants
// (shared/specs/top_theta.md §5), for the CPU kernel's tests and the CPU/CUDA parity test.
#ifndef TESSERA_TESTS_KERNELS_SPARSE_VARIANTS_H_
#define TESSERA_TESTS_KERNELS_SPARSE_VARIANTS_H_

#include <vector>

#include "kernels/op_args.h"

namespace tessera::testing {

inline std::vector<AttentionVariant> ValidSparseVariants(int32_t k) {
  using V = AttentionVariant;
  std::vector<V> out;
  for (V::Kind kind : {V::Kind::kTopTheta, V::Kind::kTopK}) {
    for (V::Placement pl : {V::Placement::kPreSoftmax, V::Placement::kPostSoftmax}) {
      for (V::Compensation sdc : {V::Compensation::kNone, V::Compensation::kExact,
                                  V::Compensation::kExpThreshold, V::Compensation::kOffline}) {
        if (pl == V::Placement::kPostSoftmax && sdc != V::Compensation::kNone) continue;
        if (sdc == V::Compensation::kExpThreshold && kind != V::Kind::kTopTheta) continue;
        for (bool vmc : {false, true}) {
          if (vmc && pl == V::Placement::kPreSoftmax && sdc == V::Compensation::kNone) continue;
          V v;
          v.kind = kind;
          v.placement = pl;
          v.sdc = sdc;
          v.vmc = vmc;
          v.k = k;
          out.push_back(v);
        }
      }
    }
  }
  return out;
}

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_KERNELS_SPARSE_VARIANTS_H_
