// Shape and dtype validation of every Backend op, run once before dispatch to any backend.
// Each returns InvalidArgument naming the op, the argument and the expected versus actual shape.
#ifndef TESSERA_KERNELS_OP_VALIDATION_H_
#define TESSERA_KERNELS_OP_VALIDATION_H_

#include "absl/status/status.h"
#include "kernels/op_args.h"

namespace tessera {

absl::Status Validate(const EmbeddingArgs& a);
absl::Status Validate(const RmsNormArgs& a);
absl::Status Validate(const GemmArgs& a);
absl::Status Validate(const RopeArgs& a);
absl::Status Validate(const KvWriteArgs& a);
absl::Status Validate(const AttentionArgs& a);
absl::Status Validate(const GatherRowsArgs& a);
absl::Status Validate(const MergeAttentionArgs& a);
absl::Status Validate(const SiluMulArgs& a);
absl::Status Validate(const AddArgs& a);
absl::Status Validate(const LerpArgs& a);
absl::Status Validate(const AverageArgs& a);
absl::Status Validate(const KeyScoresArgs& a);
absl::Status Validate(const PhiloxDropoutArgs& a);
absl::Status Validate(const CastArgs& a);
absl::Status Validate(const ArgMaxArgs& a);
absl::Status Validate(const TopKArgs& a);
absl::Status Validate(const SoftmaxStatsArgs& a);

}  // namespace tessera

#endif  // TESSERA_KERNELS_OP_VALIDATION_H_
