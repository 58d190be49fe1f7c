// KeyScorePolicy: the attention variant HOMER's passes run with: the model's own (plain, or a
// sparse attention policy) in every layer, plus the significance of every key the batch's last
// row sees (AttentionVariant::key_scores, Backend::KeyScores) in layers
// [first_layer, first_layer + scores.dim(0)), into row layer - first_layer of `scores`.
#ifndef TESSERA_METHODS_HOMER_KEY_SCORE_POLICY_H_
#define TESSERA_METHODS_HOMER_KEY_SCORE_POLICY_H_

#include "runtime/forward_hooks.h"

namespace tessera::homer {

class KeyScorePolicy : public AttentionPolicy {
 public:
  // `base` may be null (plain attention); `scores` is [layers, rows of the batch] F32 in the
  // backend's memory. Neither is owned.
  KeyScorePolicy(AttentionPolicy* base, int64_t first_layer, TensorView scores)
      : base_(base), first_layer_(first_layer), scores_(scores) {}

  absl::StatusOr<AttentionVariant> Variant(const LayerContext& ctx) override;

 private:
  AttentionPolicy* base_;
  int64_t first_layer_;
  TensorView scores_;
};

}  // namespace tessera::homer

#endif  // TESSERA_METHODS_HOMER_KEY_SCORE_POLICY_H_
