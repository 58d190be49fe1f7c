// Reductions over vocabulary-parallel logits: each tensor-parallel rank holds logits for its
// vocabulary shard ([rows, vocab_shard] in host memory, as LlamaModel::Forward returns them;
// padding columns at -inf). Greedy decoding and
// log-probabilities exchange a few numbers per row instead of the full logits; sampling with a
// temperature gathers them. Every rank of the group gets identical results.
#ifndef TESSERA_RUNTIME_VOCAB_PARALLEL_H_
#define TESSERA_RUNTIME_VOCAB_PARALLEL_H_

#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "runtime/shard_plan.h"
#include "runtime/tensor.h"

namespace tessera {

// Per row: the global argmax (lowest vocabulary id on ties, as torch.argmax).
// `tp` may be null for a single rank.
absl::StatusOr<std::vector<int32_t>> VocabParallelArgMax(Communicator* tp, const ShardPlan& plan,
                                                         const Tensor& local_logits);

// Per row: log-softmax over the whole vocabulary of the logit at `targets[row]`, and whether
// `targets[row]` is the argmax. Reduces (max, sum of exp) across shards.
struct TokenLogProb {
  double logprob = 0.0;
  bool is_greedy = false;
};
absl::StatusOr<std::vector<TokenLogProb>> VocabParallelLogProbs(
    Communicator* tp, const ShardPlan& plan, const Tensor& local_logits,
    const std::vector<int32_t>& targets);

// The full [rows, vocab_size] logits on every rank.
absl::Status GatherLogits(Communicator* tp, const ShardPlan& plan, int64_t vocab_size,
                          const Tensor& local_logits, Tensor* full);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_VOCAB_PARALLEL_H_
