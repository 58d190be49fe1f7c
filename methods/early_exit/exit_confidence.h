// The confidence of an exit head's distribution, from the vocabulary-parallel statistics of its
// logits (VocabReducer::Stats: every rank of the tensor-parallel group gets the same bits, so a
// decision c > tau is the same on all of them). shared/specs/early_exit.md §0, §6.1.
#ifndef TESSERA_METHODS_EARLY_EXIT_EXIT_CONFIDENCE_H_
#define TESSERA_METHODS_EARLY_EXIT_EXIT_CONFIDENCE_H_

#include <cstdint>

#include "configs/method_settings.pb.h"
#include "runtime/vocab_parallel.h"

namespace tessera {

// In [0, 1], larger is more confident:
//   TOP2_GAP  p(1) - p(2) (FREE's and CALM's `softmax` measure);
//   MAX_PROB  p(1);
//   ENTROPY   1 - H / ln(vocab_size).
double ExitConfidence(const VocabRowStats& stats, config::EarlyExitSettings::Confidence measure,
                      int64_t vocab_size);

}  // namespace tessera

#endif  // TESSERA_METHODS_EARLY_EXIT_EXIT_CONFIDENCE_H_
