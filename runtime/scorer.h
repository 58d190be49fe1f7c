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

// Every token of a sequence scored against the tokens before it (the prompt log-probabilities of
// an OpenAI-style `echo` with `logprobs`), with the `top_n` most likely tokens at each position.
struct TokenScoreRequest {
  std::vector<int32_t> tokens;  // not empty; tokens[0] is context only (its entry is null)
  // Also score the greedy next token after the sequence (the argmax of the last row, ties to
  // the smaller id): the one a greedy generation step would emit, from the same pass.
  bool score_next = false;
  bool score_prompt = true;  // false: only the next token (needs score_next)
};

struct IdLogprob {
  int32_t id = 0;
  float logprob = 0.0f;  // natural log
};

struct ScoredToken {
  int32_t id = 0;
  // log softmax(z)[id], computed exactly as the value of the same id in `top` (both are
  // logit - log_sum_exp in double, then rounded), so a greedy token equals its top-1 value.
  float logprob = 0.0f;
  std::vector<IdLogprob> top;  // top_n entries, descending, the smaller id first on ties
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

  // Per request: tokens[1..] scored in order (when score_prompt), then the greedy next token when
  // `score_next`.
  // 0 <= top_n <= kMaxTopN. A request with one token and no score_next gives an empty list.
  static constexpr int kMaxTopN = 20;
  absl::StatusOr<std::vector<std::vector<ScoredToken>>> ScoreTokens(
      const std::vector<TokenScoreRequest>& requests, int top_n);

 private:
  // One sequence fed from position 0; rows first_row.. are scored against targets (-1: the
  // row's argmax).
  struct Feed {
    std::vector<int32_t> tokens;
    size_t first_row = 0;
    std::vector<int32_t> targets;  // one per scored row, rows first_row .. tokens.size()-1
  };
  absl::StatusOr<std::vector<std::vector<ScoredToken>>> Score(const std::vector<Feed>& feeds,
                                                              int top_n,
                                                              std::vector<std::vector<bool>>* greedy);

  LlamaModel* model_;
  int32_t max_batch_, max_tokens_per_pass_;
  int64_t max_seq_len_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_SCORER_H_
