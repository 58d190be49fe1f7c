// Scorer: log-likelihoods of continuations given contexts, the primitive of perplexity and
// multiple-choice evaluation (lm-evaluation-harness's `loglikelihood`).
//
// For a request (context, continuation) the model reads context + continuation[:-1] and scores
// every continuation token: the sum of log p(token | everything before it), whether each token
// was the argmax (lm-eval's is_greedy), and the per-token values. Requests run together in
// ragged batches. Sharded: every rank of a replica makes the same call; the last pipeline
// stage reduces log-softmax across the vocabulary shards (a few numbers per position, never the
// full logits) and broadcasts the results to every stage.
#ifndef TESSERA_RUNTIME_SCORER_H_
#define TESSERA_RUNTIME_SCORER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "runtime/llama_model.h"

namespace tessera {

struct LoglikelihoodRequest {
  std::vector<int32_t> context;       // not empty (a Llama context starts with BOS)
  std::vector<int32_t> continuation;  // not empty
};

struct LoglikelihoodResult {
  double logprob = 0.0;      // sum over the continuation tokens, natural log
  bool is_greedy = true;     // every continuation token was the most likely one
  std::vector<float> token_logprobs;
};

class Scorer {
 public:
  // `max_tokens_per_pass` bounds the tokens of one forward pass (activation and logit memory).
  // `max_seq_len` is the user's context request (--max-seq-len / model.max_seq_len; 0: none):
  // a request reads at most ContextLimit(config, max_seq_len) tokens (runtime/context_limit.h).
  Scorer(LlamaModel* model, int32_t max_batch = 16, int32_t max_tokens_per_pass = 2048,
         int64_t max_seq_len = 0);

  absl::StatusOr<std::vector<LoglikelihoodResult>> Loglikelihood(
      const std::vector<LoglikelihoodRequest>& requests);

 private:
  LlamaModel* model_;
  int32_t max_batch_, max_tokens_per_pass_;
  int64_t max_seq_len_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_SCORER_H_
