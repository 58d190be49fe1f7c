// Perplexity over long texts with a sliding window, as the transformers perplexity guide
// computes it: windows of `window` tokens start every `stride` tokens; a window scores the
// tokens past the previous window's end, with the rest of the window as context. With stride <
// window every token but the first is scored once; with stride == window the first token of each
// window has no context and is not scored. A stride larger than the window is refused (it would
// leave tokens unscored).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/eval/jsonl.h"
#include "launcher/eval/tasks.h"
#include "runtime/context_limit.h"
#include "runtime/scorer.h"

namespace tessera {
namespace {

class PerplexityTask final : public EvalTask {
 public:
  PerplexityTask(std::vector<std::vector<int32_t>> texts, int32_t window, int32_t stride,
                 int32_t max_batch, int32_t max_seq_len, std::string data)
      : texts_(std::move(texts)),
        window_(window),
        stride_(stride),
        max_batch_(max_batch),
        max_seq_len_(max_seq_len),
        data_(std::move(data)) {}

  std::string kind() const override { return "perplexity"; }
  size_t size() const override { return texts_.size(); }

  absl::StatusOr<std::vector<nlohmann::json>> Evaluate(const std::vector<size_t>& indices,
                                                       EvalContext& ctx) override {
    Scorer scorer(ctx.model, max_batch_, std::max(2048, window_), max_seq_len_);
    std::vector<nlohmann::json> records;
    for (size_t index : indices) {
      const std::vector<int32_t>& ids = texts_[index];
      std::vector<LoglikelihoodRequest> windows;
      int64_t prev_end = 0;
      for (int64_t begin = 0; begin < static_cast<int64_t>(ids.size()); begin += stride_) {
        const int64_t end = std::min<int64_t>(begin + window_, ids.size());
        const int64_t first_target = std::max(prev_end, begin + 1);
        if (first_target < end) {
          windows.push_back({std::vector<int32_t>(ids.begin() + begin, ids.begin() + first_target),
                             std::vector<int32_t>(ids.begin() + first_target, ids.begin() + end)});
          ctx.tokens_processed += end - begin;
        }
        prev_end = end;
        if (end == static_cast<int64_t>(ids.size())) break;
      }
      ASSIGN_OR_RETURN(std::vector<LoglikelihoodResult> scored, scorer.Loglikelihood(windows));
      double nll = 0;
      int64_t tokens = 0;
      for (const LoglikelihoodResult& r : scored) {
        nll -= r.logprob;
        tokens += static_cast<int64_t>(r.token_logprobs.size());
      }
      records.push_back({{"index", index},
                         {"tokens", tokens},
                         {"nll", nll},
                         {"perplexity", tokens > 0 ? std::exp(nll / tokens) : NAN}});
      if (ctx.progress) ctx.progress(1);
    }
    return records;
  }

  nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const override {
    double nll = 0;
    int64_t tokens = 0;
    for (const auto& r : records) {
      nll += r["nll"].get<double>();
      tokens += r["tokens"].get<int64_t>();
    }
    return {{"perplexity", std::exp(nll / std::max<int64_t>(tokens, 1))},
            {"nll_per_token", nll / std::max<int64_t>(tokens, 1)},
            {"bits_per_token", nll / std::max<int64_t>(tokens, 1) / std::log(2.0)},
            {"tokens", tokens}};
  }

  nlohmann::json Describe() const override {
    return {{"data", data_}, {"window", window_}, {"stride", stride_}};
  }

 private:
  std::vector<std::vector<int32_t>> texts_;
  int32_t window_, stride_, max_batch_, max_seq_len_;
  std::string data_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalTask>> MakePerplexityTask(const config::RunConfig& c,
                                                             const ModelConfig& model,
                                                             const Tokenizer& tokenizer) {
  const config::PerplexityTask& p = c.task().perplexity();
  const int32_t max_seq_len = c.model().max_seq_len();
  absl::StatusOr<int64_t> limit = ContextLimit(model, max_seq_len);
  if (!limit.ok()) return limit.status();
  int32_t window = p.window();
  if (window == 0) {
    window = static_cast<int32_t>(std::min<int64_t>(*limit, max_seq_len > 0 ? max_seq_len : 2048));
  }
  if (window > *limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("task.perplexity.window: ", window, " exceeds the context of ", *limit,
                     max_seq_len > 0 ? " (model.max_seq_len)" : " (max_position_embeddings)",
                     ContextLimitHint(model, max_seq_len, window)));
  }
  const int32_t stride = p.stride() > 0 ? p.stride() : std::max(1, window / 2);
  // Windows start every `stride` tokens and score at most `window` tokens each, so a larger
  // stride would skip the tokens between one window's end and the next one's start.
  if (stride > window) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task.perplexity.stride: ", stride, " exceeds the window of ", window, " tokens",
        p.window() > 0 ? ""
                       : " (task.perplexity.window unset: model.max_seq_len, or else "
                         "min(max_position_embeddings, 2048))",
        "; the tokens between windows would not be scored. Use a stride <= ", window,
        " or a larger task.perplexity.window"));
  }
  const std::string field = p.text_field().empty() ? "text" : p.text_field();
  ASSIGN_OR_RETURN(std::vector<JsonlRecord> records, ReadJsonl(p.data()));
  std::vector<std::vector<int32_t>> texts;
  for (size_t i = 0; i < Limited(c, records.size()); ++i) {
    ASSIGN_OR_RETURN(std::string text, StringField(p.data(), records[i], field.c_str()));
    auto ids = tokenizer.Encode(text);
    if (!ids.ok()) return RecordError(p.data(), records[i], ids.status().message());
    if (ids->empty()) return RecordError(p.data(), records[i], "the text is empty");
    ids->insert(ids->begin(), model.bos_token_id);
    texts.push_back(std::move(ids).value());
  }
  return std::unique_ptr<EvalTask>(
      new PerplexityTask(std::move(texts), window, stride, MaxBatch(c), max_seq_len, p.data()));
}

}  // namespace tessera
