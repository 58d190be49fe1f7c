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
  std::vector<Feed> feeds(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const LoglikelihoodRequest& r = requests[i];
    if (r.context.empty() || r.continuation.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("loglikelihood request ", i, ": context and continuation must not be empty"));
    }
    // Row of position p predicts token p + 1: rows of the last context token onwards.
    Feed& f = feeds[i];
    f.tokens = r.context;
    f.tokens.insert(f.tokens.end(), r.continuation.begin(), r.continuation.end() - 1);
    f.first_row = r.context.size() - 1;
    f.targets = r.continuation;
  }
  std::vector<std::vector<bool>> greedy;
  ASSIGN_OR_RETURN(auto scored, Score(feeds, /*top_n=*/0, &greedy));
  std::vector<LoglikelihoodResult> results(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    for (size_t j = 0; j < scored[i].size(); ++j) {
      results[i].token_logprobs.push_back(scored[i][j].logprob);
      results[i].logprob += scored[i][j].logprob;
      results[i].is_greedy = results[i].is_greedy && greedy[i][j];
    }
  }
  return results;
}

absl::StatusOr<std::vector<std::vector<ScoredToken>>> Scorer::ScoreTokens(
    const std::vector<TokenScoreRequest>& requests, int top_n) {
  if (top_n < 0 || top_n > kMaxTopN) {
    return absl::InvalidArgumentError(
        absl::StrCat("ScoreTokens: top_n=", top_n, " is outside [0, ", kMaxTopN, "]"));
  }
  std::vector<Feed> feeds(requests.size());
  std::vector<size_t> pending;  // requests with something to score
  for (size_t i = 0; i < requests.size(); ++i) {
    const TokenScoreRequest& r = requests[i];
    if (r.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("score request ", i, ": no tokens"));
    }
    if (!r.score_next && (!r.score_prompt || r.tokens.size() < 2)) continue;
    Feed f;
    f.tokens = r.score_next ? r.tokens : std::vector<int32_t>(r.tokens.begin(), r.tokens.end() - 1);
    if (r.score_prompt) {
      f.targets.assign(r.tokens.begin() + 1, r.tokens.end());
    } else {
      f.first_row = f.tokens.size() - 1;
    }
    if (r.score_next) f.targets.push_back(-1);
    feeds[pending.size()] = std::move(f);
    pending.push_back(i);
  }
  feeds.resize(pending.size());
  ASSIGN_OR_RETURN(auto scored, Score(feeds, top_n, nullptr));
  std::vector<std::vector<ScoredToken>> out(requests.size());
  for (size_t k = 0; k < pending.size(); ++k) out[pending[k]] = std::move(scored[k]);
  return out;
}

absl::StatusOr<std::vector<std::vector<ScoredToken>>> Scorer::Score(
    const std::vector<Feed>& feeds, int top_n, std::vector<std::vector<bool>>* greedy) {
  const ModelConfig& c = model_->config();
  ASSIGN_OR_RETURN(const int64_t limit, ContextLimit(c, max_seq_len_));
  int64_t longest = 1;
  for (size_t i = 0; i < feeds.size(); ++i) {
    const Feed& f = feeds[i];
    const int64_t fed = static_cast<int64_t>(f.tokens.size());
    if (fed > limit) {
      return absl::InvalidArgumentError(
          absl::StrCat("loglikelihood request ", i, ": ", fed, " tokens exceed the context of ",
                       limit, max_seq_len_ > 0 ? " (max_seq_len)" : " (max_position_embeddings)",
                       "; shorten the context (perplexity: a smaller window)",
                       ContextLimitHint(c, max_seq_len_, fed)));
    }
    for (const auto* ids : {&f.tokens, &f.targets}) {
      for (int32_t id : *ids) {
        if (id < -1 || id >= c.vocab_size || (id == -1 && ids == &f.tokens)) {
          return absl::InvalidArgumentError(absl::StrCat("loglikelihood request ", i,
                                                         ": token id ", id,
                                                         " is outside the vocabulary"));
        }
      }
    }
    longest = std::max(longest, fed);
  }
  std::vector<std::vector<ScoredToken>> results(feeds.size());
  if (greedy != nullptr) greedy->assign(feeds.size(), {});
  if (feeds.empty()) return results;
  const int64_t slots = std::min<int64_t>(max_batch_, feeds.size());
  ASSIGN_OR_RETURN(KvCache * cache, model_->AcquireCache(slots, longest));
  StepEngine engine(model_);
  // Words per scored row: log-prob, target id, greedy flag, then top_n (id, log-prob) pairs.
  const size_t words = 3 + 2 * static_cast<size_t>(top_n);
  int32_t step = 0;
  for (size_t begin = 0; begin < feeds.size();) {
    // One pass: consecutive requests while slots and the token budget last (at least one).
    ForwardBatch batch;
    batch.step = step++;
    std::vector<int32_t> targets;
    size_t end = begin;
    while (end < feeds.size() && static_cast<int64_t>(end - begin) < slots) {
      const Feed& f = feeds[end];
      const size_t fed = f.tokens.size();
      if (end > begin && batch.tokens.size() + fed > static_cast<size_t>(max_tokens_per_pass_)) break;
      const int32_t slot = static_cast<int32_t>(end - begin);
      cache->Clear(slot);
      const int32_t first = static_cast<int32_t>(batch.tokens.size());
      for (size_t p = 0; p < fed; ++p) {
        batch.tokens.push_back(f.tokens[p]);
        batch.positions.push_back(static_cast<int32_t>(p));
        batch.slots.push_back(slot);
      }
      for (size_t j = 0; j < f.targets.size(); ++j) {
        batch.logit_rows.push_back(first + static_cast<int32_t>(f.first_row + j));
        targets.push_back(f.targets[j]);
      }
      ++end;
    }
    // Computed where the logits are and sent to every stage.
    StepReduction score;
    score.words_per_row = words;
    score.reduce = [&](size_t, const ForwardBatch&,
                       const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
      VocabReducer& vocab = model_->vocab();
      std::vector<int32_t> resolved = targets;
      std::vector<VocabRowStats> stats;
      const bool any_next = std::find(resolved.begin(), resolved.end(), -1) != resolved.end();
      if (any_next || top_n > 0) {
        ASSIGN_OR_RETURN(stats, vocab.Stats(out.logits));
        for (size_t j = 0; j < resolved.size(); ++j) {
          if (resolved[j] < 0) resolved[j] = stats[j].top1;
        }
      }
      ASSIGN_OR_RETURN(std::vector<TokenLogProb> lp, vocab.LogProbs(out.logits, resolved));
      std::vector<std::vector<VocabReducer::IdLogit>> top;
      if (top_n > 0) {
        ASSIGN_OR_RETURN(top, vocab.TopK(out.logits, top_n));
      }
      std::vector<float> w(words * lp.size());
      for (size_t j = 0; j < lp.size(); ++j) {
        float* row = &w[words * j];
        row[0] = static_cast<float>(lp[j].logprob);
        row[1] = static_cast<float>(resolved[j]);
        row[2] = lp[j].is_greedy ? 1.0f : 0.0f;
        for (int k = 0; k < top_n; ++k) {
          row[3 + 2 * k] = static_cast<float>(top[j][k].id);
          row[4 + 2 * k] = static_cast<float>(static_cast<double>(top[j][k].logit) -
                                              stats[j].log_sum_exp);
        }
      }
      return w;
    };
    ASSIGN_OR_RETURN(const std::vector<float> scored, engine.Run({batch}, *cache, score));
    size_t row = 0;
    for (size_t i = begin; i < end; ++i) {
      for (size_t j = 0; j < feeds[i].targets.size(); ++j, ++row) {
        const float* w = &scored[words * row];
        ScoredToken t;
        t.logprob = w[0];
        t.id = static_cast<int32_t>(w[1]);
        for (int k = 0; k < top_n; ++k) {
          t.top.push_back({static_cast<int32_t>(w[3 + 2 * k]), w[4 + 2 * k]});
        }
        results[i].push_back(std::move(t));
        if (greedy != nullptr) (*greedy)[i].push_back(w[2] > 0.5f);
      }
    }
    begin = end;
  }
  return results;
}

}  // namespace tessera
