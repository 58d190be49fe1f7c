#include "runtime/scorer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/context_limit.h"
#include "runtime/step_engine.h"
#include "runtime/vocab_parallel.h"

namespace tessera {

Scorer::Scorer(LlamaModel* model, int32_t max_batch, int32_t max_tokens_per_pass,
               int64_t max_seq_len)
    : model_(model),
      max_batch_(max_batch),
      max_tokens_per_pass_(max_tokens_per_pass),
      max_seq_len_(max_seq_len) {}

absl::StatusOr<std::vector<LoglikelihoodResult>> Scorer::Loglikelihood(
    const std::vector<LoglikelihoodRequest>& requests) {
  const ModelConfig& c = model_->config();
  ASSIGN_OR_RETURN(const int64_t limit, ContextLimit(c, max_seq_len_));
  int64_t longest = 1;
  for (size_t i = 0; i < requests.size(); ++i) {
    const LoglikelihoodRequest& r = requests[i];
    if (r.context.empty() || r.continuation.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("loglikelihood request ", i, ": context and continuation must not be empty"));
    }
    const int64_t fed = static_cast<int64_t>(r.context.size() + r.continuation.size()) - 1;
    if (fed > limit) {
      return absl::InvalidArgumentError(
          absl::StrCat("loglikelihood request ", i, ": ", fed, " tokens exceed the context of ",
                       limit, max_seq_len_ > 0 ? " (max_seq_len)" : " (max_position_embeddings)",
                       "; shorten the context (perplexity: a smaller window)",
                       ContextLimitHint(c, max_seq_len_, fed)));
    }
    for (const auto* ids : {&r.context, &r.continuation}) {
      for (int32_t id : *ids) {
        if (id < 0 || id >= c.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("loglikelihood request ", i,
                                                         ": token id ", id,
                                                         " is outside the vocabulary"));
        }
      }
    }
    longest = std::max(longest, fed);
  }
  std::vector<LoglikelihoodResult> results(requests.size());
  if (requests.empty()) return results;
  const int64_t slots = std::min<int64_t>(max_batch_, requests.size());
  ASSIGN_OR_RETURN(KvCache * cache, model_->AcquireCache(slots, longest));
  StepEngine engine(model_);
  int32_t step = 0;
  for (size_t begin = 0; begin < requests.size();) {
    // One pass: consecutive requests while slots and the token budget last (at least one).
    ForwardBatch batch;
    batch.step = step++;
    std::vector<int32_t> targets;
    size_t end = begin;
    while (end < requests.size() && static_cast<int64_t>(end - begin) < slots) {
      const LoglikelihoodRequest& r = requests[end];
      const size_t fed = r.context.size() + r.continuation.size() - 1;
      if (end > begin && batch.tokens.size() + fed > static_cast<size_t>(max_tokens_per_pass_)) break;
      const int32_t slot = static_cast<int32_t>(end - begin);
      cache->Clear(slot);
      for (size_t p = 0; p < fed; ++p) {
        batch.tokens.push_back(p < r.context.size() ? r.context[p]
                                                    : r.continuation[p - r.context.size()]);
        batch.positions.push_back(static_cast<int32_t>(p));
        batch.slots.push_back(slot);
      }
      // Row of position p predicts token p + 1: rows of the last context token onwards.
      const int32_t first = static_cast<int32_t>(batch.tokens.size() - fed);
      for (size_t j = 0; j < r.continuation.size(); ++j) {
        batch.logit_rows.push_back(first + static_cast<int32_t>(r.context.size() - 1 + j));
        targets.push_back(r.continuation[j]);
      }
      ++end;
    }
    // (log-prob, greedy) per scored row, computed where the logits are and sent to every stage.
    StepReduction score;
    score.words_per_row = 2;
    score.reduce = [&](size_t, const ForwardBatch&,
                       const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
      ASSIGN_OR_RETURN(std::vector<TokenLogProb> lp, model_->vocab().LogProbs(out.logits, targets));
      std::vector<float> words(2 * lp.size());
      for (size_t j = 0; j < lp.size(); ++j) {
        words[2 * j] = static_cast<float>(lp[j].logprob);
        words[2 * j + 1] = lp[j].is_greedy ? 1.0f : 0.0f;
      }
      return words;
    };
    ASSIGN_OR_RETURN(const std::vector<float> scored, engine.Run({batch}, *cache, score));
    size_t row = 0;
    for (size_t i = begin; i < end; ++i) {
      LoglikelihoodResult& out = results[i];
      for (size_t j = 0; j < requests[i].continuation.size(); ++j, ++row) {
        out.token_logprobs.push_back(scored[2 * row]);
        out.logprob += scored[2 * row];
        out.is_greedy = out.is_greedy && scored[2 * row + 1] > 0.5f;
      }
    }
    begin = end;
  }
  return results;
}

}  // namespace tessera
