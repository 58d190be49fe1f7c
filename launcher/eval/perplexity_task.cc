// Perplexity of whole texts, with lm-evaluation-harness's rolling windows (stride 0, the
// default) or the sliding window of transformers' perplexity guide (stride > 0); see
// PerplexityTask in configs/run_config.proto. Besides token perplexity it reports
// lm-evaluation-harness's word_perplexity, byte_perplexity and bits_per_byte, which divide the
// same summed log-likelihood by the text's words and UTF-8 bytes.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/eval/jsonl.h"
#include "launcher/eval/python_text.h"
#include "launcher/eval/tasks.h"
#include "runtime/context_limit.h"
#include "runtime/scorer.h"

namespace tessera {
namespace {

// A text: its ids (BOS first) and lm-evaluation-harness's word and byte counts of it.
struct PerplexityText {
  std::vector<int32_t> ids;
  int64_t words = 0, bytes = 0;
};

// lm-evaluation-harness's get_rolling_token_windows(context_len=1) + make_disjoint_window over
// ids = [BOS] + text: each window predicts up to `window` new tokens from the `window` tokens
// before its last one.
std::vector<LoglikelihoodRequest> RollingWindows(const std::vector<int32_t>& ids, int64_t window) {
  std::vector<LoglikelihoodRequest> windows;
  const int64_t n = static_cast<int64_t>(ids.size());
  for (int64_t scored = 1; scored < n;) {  // ids[0] is BOS: the first window's context
    const int64_t end = std::min(n, scored + window);
    const int64_t begin = std::max<int64_t>(0, end - 1 - window);
    windows.push_back({std::vector<int32_t>(ids.begin() + begin, ids.begin() + scored),
                       std::vector<int32_t>(ids.begin() + scored, ids.begin() + end)});
    scored = end;
  }
  return windows;
}

// Windows of `window` tokens starting every `stride` tokens, each scoring the tokens past the
// previous window's end.
std::vector<LoglikelihoodRequest> SlidingWindows(const std::vector<int32_t>& ids, int64_t window,
                                                 int64_t stride) {
  std::vector<LoglikelihoodRequest> windows;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < static_cast<int64_t>(ids.size()); begin += stride) {
    const int64_t end = std::min<int64_t>(begin + window, ids.size());
    const int64_t first_target = std::max(prev_end, begin + 1);
    if (first_target < end) {
      windows.push_back({std::vector<int32_t>(ids.begin() + begin, ids.begin() + first_target),
                         std::vector<int32_t>(ids.begin() + first_target, ids.begin() + end)});
    }
    prev_end = end;
    if (end == static_cast<int64_t>(ids.size())) break;
  }
  return windows;
}

class PerplexityTask final : public EvalTask {
 public:
  PerplexityTask(std::vector<PerplexityText> texts, int32_t window, int32_t stride,
                 int32_t max_batch, int32_t max_seq_len, std::string data, bool streamed)
      : streamed_(streamed),
        texts_(std::move(texts)),
        window_(window),
        stride_(stride),
        max_batch_(max_batch),
        max_seq_len_(max_seq_len),
        data_(std::move(data)) {}

  std::string kind() const override { return "perplexity"; }
  size_t size() const override { return texts_.size(); }

  absl::StatusOr<std::vector<nlohmann::json>> Evaluate(const std::vector<size_t>& indices,
                                                       EvalContext& ctx) override {
    if (streamed_) return Streamed(indices, ctx);
    Scorer scorer(ctx.model, max_batch_, std::max(2048, window_), max_seq_len_);
    std::vector<nlohmann::json> records;
    for (size_t index : indices) {
      const PerplexityText& text = texts_[index];
      const std::vector<LoglikelihoodRequest> windows =
          stride_ > 0 ? SlidingWindows(text.ids, window_, stride_)
                      : RollingWindows(text.ids, window_);
      for (const LoglikelihoodRequest& w : windows) {
        ctx.tokens_processed += w.context.size() + w.continuation.size() - 1;
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
                         {"windows", windows.size()},
                         {"words", text.words},
                         {"bytes", text.bytes},
                         {"nll", nll},
                         {"perplexity", tokens > 0 ? std::exp(nll / tokens) : NAN}});
      if (ctx.progress) ctx.progress(1);
    }
    return records;
  }

  // Each text as one stream through the runner (the reference harness of Activation Beacon: the
  // labels shifted once over the whole text, every token after BOS scored).
  absl::StatusOr<std::vector<nlohmann::json>> Streamed(const std::vector<size_t>& indices,
                                                       EvalContext& ctx) {
    std::vector<nlohmann::json> records;
    for (size_t index : indices) {
      const std::vector<int32_t>& ids = texts_[index].ids;
      const int64_t n = static_cast<int64_t>(ids.size());
      ASSIGN_OR_RETURN(KvCache * cache, ctx.model->AcquireCache(1, ctx.runner->PromptEntries(n)));
      RETURN_IF_ERROR(ctx.runner->StartSequence(0, index));
      ForwardBatch batch;
      batch.tokens = ids;
      for (int64_t i = 0; i < n; ++i) {
        batch.positions.push_back(static_cast<int32_t>(i));
        batch.slots.push_back(0);
        if (i + 1 < n) batch.logit_rows.push_back(static_cast<int32_t>(i));
      }
      StepReduction reduction;
      reduction.reduce = [&](size_t, const ForwardBatch& b, const ForwardOutput& out)
          -> absl::StatusOr<std::vector<float>> {
        std::vector<int32_t> targets;
        for (int32_t r : out.logit_rows) targets.push_back(b.tokens[b.logit_rows[r] + 1]);
        ASSIGN_OR_RETURN(const auto logprobs, ctx.model->vocab().LogProbs(out.logits, targets));
        std::vector<float> words;
        for (const TokenLogProb& t : logprobs) words.push_back(static_cast<float>(t.logprob));
        return words;
      };
      ASSIGN_OR_RETURN(const std::vector<float> logprobs,
                       ctx.runner->Run({batch}, *cache, reduction));
      ASSIGN_OR_RETURN(const std::vector<SequenceCounters> counters,
                       ctx.runner->EndSequences({0}, *cache));
      double nll = 0;
      for (float lp : logprobs) nll -= lp;
      ctx.tokens_processed += n;
      const int64_t tokens = static_cast<int64_t>(logprobs.size());
      nlohmann::json record = {{"index", index},
                               {"tokens", tokens},
                               {"windows", "one stream"},
                               {"words", texts_[index].words},
                               {"bytes", texts_[index].bytes},
                               {"nll", nll},
                               {"perplexity", tokens > 0 ? std::exp(nll / tokens) : NAN}};
      for (const auto& [name, value] : counters[0].values) record["method"][name] = value;
      records.push_back(std::move(record));
      if (ctx.progress) ctx.progress(1);
    }
    return records;
  }

  nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const override {
    double nll = 0;
    int64_t tokens = 0, words = 0, bytes = 0;
    for (const auto& r : records) {
      nll += r["nll"].get<double>();
      tokens += r["tokens"].get<int64_t>();
      words += r["words"].get<int64_t>();
      bytes += r["bytes"].get<int64_t>();
    }
    const double per_token = nll / std::max<int64_t>(tokens, 1);
    const double per_byte = nll / std::max<int64_t>(bytes, 1);
    return {{"perplexity", std::exp(per_token)},
            {"nll_per_token", per_token},
            {"bits_per_token", per_token / std::log(2.0)},
            {"word_perplexity", std::exp(nll / std::max<int64_t>(words, 1))},
            {"byte_perplexity", std::exp(per_byte)},
            {"bits_per_byte", per_byte / std::log(2.0)},
            {"tokens", tokens}};
  }

  nlohmann::json Describe() const override {
    if (streamed_) {
      return {{"data", data_},
              {"windows", "one stream per text through the method"},
              {"bos", "prefix of the text"},
              {"output_type", "loglikelihood_rolling"}};
    }
    return {{"data", data_},
            {"window", window_},
            {"stride", stride_},
            {"windows", stride_ > 0 ? "sliding" : "rolling (lm-evaluation-harness)"},
            {"bos", "prefix of the first window"},
            {"output_type", "loglikelihood_rolling"}};
  }

 private:
  bool streamed_;
  std::vector<PerplexityText> texts_;
  int32_t window_, stride_, max_batch_, max_seq_len_;
  std::string data_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalTask>> MakePerplexityTask(const config::RunConfig& c,
                                                             const ModelConfig& model,
                                                             const Tokenizer& tokenizer,
                                                             const StepRunner* runner) {
  const config::PerplexityTask& p = c.task().perplexity();
  if (runner != nullptr && runner->StreamsLongInputs() && (p.window() != 0 || p.stride() != 0)) {
    return absl::InvalidArgumentError(
        "task.perplexity.window / stride: the method scores each text as one stream (its memory "
        "holds the whole text), so windows are not used; remove them");
  }
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
  const int32_t stride = p.stride();
  // Sliding windows start every `stride` tokens and score at most `window` tokens each, so a
  // larger stride would skip the tokens between one window's end and the next one's start.
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
  std::vector<PerplexityText> texts;
  for (size_t i = 0; i < Limited(c, records.size()); ++i) {
    ASSIGN_OR_RETURN(std::string text, StringField(p.data(), records[i], field.c_str()));
    auto ids = tokenizer.Encode(text);
    if (!ids.ok()) return RecordError(p.data(), records[i], ids.status().message());
    if (ids->empty()) return RecordError(p.data(), records[i], "the text is empty");
    PerplexityText t;
    t.ids.push_back(model.bos_token_id);
    t.ids.insert(t.ids.end(), ids->begin(), ids->end());
    t.words = PythonSplitWordCount(text);
    t.bytes = static_cast<int64_t>(text.size());
    texts.push_back(std::move(t));
  }
  return std::unique_ptr<EvalTask>(
      new PerplexityTask(std::move(texts), window, stride, MaxBatch(c), max_seq_len, p.data(),
                         runner != nullptr && runner->StreamsLongInputs()));
}

}  // namespace tessera
