#include "methods/homer/key_score_policy.h"

#include "kernels/status_macros.h"

namespace tessera::homer {

absl::StatusOr<AttentionVariant> KeyScorePolicy::Variant(const LayerContext& ctx) {
  AttentionVariant v;
  if (base_ != nullptr) {
    ASSIGN_OR_RETURN(v, base_->Variant(ctx));
  }
  const int64_t row = ctx.layer - first_layer_;
  if (row >= 0 && row < scores_.dim(0)) {
    v.key_scores = scores_.Rows(row, row + 1).Reshaped({scores_.dim(1)});
    v.score_row = static_cast<int32_t>(scores_.dim(1)) - 1;
  }
  return v;
}

}  // namespace tessera::homer
