// The fork's JSD-contrastive confidence (shared/specs/early_exit.md §3.3), a research mode of
// CALM: the exit layer l is the expert, the amateur the earlier layer m maximising
// JSD(p_l|head, p_m|head) / (l - m) over the plausibility head V_head = {x : p_l(x) >= 0.1 max p_l}
// (the JSD over the head entries of the two unnormalised vectors; the division is the layer
// distance discount). The contrasted distribution is s = softmax_{V_head}(log p_l - log p_m)
// (times sum p_l = 1) on the head and s = p_l elsewhere; the confidence is s(1) - s(2). It only
// decides the exit: the emitted token stays the argmax of z_l.
//
// Computed on the host in double precision from full logits gathered on every rank of the
// tensor-parallel group (VocabReducer::GatherFull), so every rank decides the same; the fork
// also computes it on the CPU in float64.
#ifndef TESSERA_METHODS_EARLY_EXIT_CONTRASTIVE_CONFIDENCE_H_
#define TESSERA_METHODS_EARLY_EXIT_CONTRASTIVE_CONFIDENCE_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace tessera {

// softmax(z) in double precision.
std::vector<double> SoftmaxOf(absl::Span<const float> logits);

struct ContrastiveResult {
  double confidence = 0;
  int amateur = -1;  // index into `amateurs`
};

// The confidence of `expert` (probabilities of the exit after `expert_blocks` blocks) against
// the earlier exits `amateurs` (probabilities, after amateur_blocks[i] blocks each, all fewer
// than expert_blocks). `amateurs` must not be empty.
ContrastiveResult JsdContrastiveConfidence(const std::vector<double>& expert, int64_t expert_blocks,
                                           const std::vector<const std::vector<double>*>& amateurs,
                                           const std::vector<int64_t>& amateur_blocks);

}  // namespace tessera

#endif  // TESSERA_METHODS_EARLY_EXIT_CONTRASTIVE_CONFIDENCE_H_
