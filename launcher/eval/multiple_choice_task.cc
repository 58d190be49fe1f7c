// Multiple choice by log-likelihood, scored as lm-evaluation-harness does: each choice is a
// continuation of the context; acc takes the choice with the highest summed log-probability,
// acc_norm the highest log-probability per character of the choice text. Context and
// continuation are tokenized as lm-evaluation-harness's encode_pair: trailing spaces of the
// context move to the continuation, and the continuation's ids are those of context +
// continuation past the context's own ids.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/eval/jsonl.h"
#include "launcher/eval/tasks.h"
#include "runtime/scorer.h"

namespace tessera {
namespace {

struct Question {
  std::vector<LoglikelihoodRequest> choices;
  std::vector<double> choice_chars;  // length of each choice text in characters (code points)
  int64_t gold = 0;
};

double CodePoints(const std::string& s) {
  double n = 0;
  for (unsigned char ch : s) n += (ch & 0xc0) != 0x80;
  return n;
}

class MultipleChoiceTask final : public EvalTask {
 public:
  MultipleChoiceTask(std::vector<Question> questions, int32_t max_batch, std::string data)
      : questions_(std::move(questions)), max_batch_(max_batch), data_(std::move(data)) {}

  std::string kind() const override { return "multiple_choice"; }
  size_t size() const override { return questions_.size(); }

  absl::StatusOr<std::vector<nlohmann::json>> Evaluate(const std::vector<size_t>& indices,
                                                       EvalContext& ctx) override {
    Scorer scorer(ctx.model, max_batch_, /*max_tokens_per_pass=*/2048,
                  ctx.config != nullptr ? ctx.config->model().max_seq_len() : 0);
    std::vector<nlohmann::json> records;
    for (size_t begin = 0; begin < indices.size(); begin += max_batch_) {
      const size_t end = std::min(indices.size(), begin + max_batch_);
      std::vector<LoglikelihoodRequest> requests;
      for (size_t k = begin; k < end; ++k) {
        for (const auto& r : questions_[indices[k]].choices) {
          requests.push_back(r);
          ctx.tokens_processed += r.context.size() + r.continuation.size() - 1;
        }
      }
      ASSIGN_OR_RETURN(std::vector<LoglikelihoodResult> scored, scorer.Loglikelihood(requests));
      size_t next = 0;
      for (size_t k = begin; k < end; ++k) {
        const Question& q = questions_[indices[k]];
        std::vector<double> lls;
        std::vector<bool> greedy;
        size_t pred = 0, pred_norm = 0;
        for (size_t j = 0; j < q.choices.size(); ++j, ++next) {
          lls.push_back(scored[next].logprob);
          greedy.push_back(scored[next].is_greedy);
          if (lls[j] > lls[pred]) pred = j;
          if (lls[j] / q.choice_chars[j] > lls[pred_norm] / q.choice_chars[pred_norm]) pred_norm = j;
        }
        records.push_back({{"index", indices[k]},
                           {"gold", q.gold},
                           {"loglikelihoods", lls},
                           {"is_greedy", greedy},
                           {"pred", pred},
                           {"pred_norm", pred_norm},
                           {"acc", static_cast<int64_t>(pred) == q.gold ? 1.0 : 0.0},
                           {"acc_norm", static_cast<int64_t>(pred_norm) == q.gold ? 1.0 : 0.0}});
      }
      if (ctx.progress) ctx.progress(static_cast<int64_t>(end - begin));
    }
    return records;
  }

  nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const override {
    std::vector<double> acc, acc_norm;
    for (const auto& r : records) {
      acc.push_back(r["acc"].get<double>());
      acc_norm.push_back(r["acc_norm"].get<double>());
    }
    const MeanStderr a = MeanWithStderr(acc), n = MeanWithStderr(acc_norm);
    return {{"acc", a.mean}, {"acc_stderr", a.stderr_}, {"acc_norm", n.mean},
            {"acc_norm_stderr", n.stderr_}};
  }

  nlohmann::json Describe() const override { return {{"data", data_}, {"output_type", "multiple_choice"}}; }

 private:
  std::vector<Question> questions_;
  int32_t max_batch_;
  std::string data_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalTask>> MakeMultipleChoiceTask(const config::RunConfig& c,
                                                                 const ModelConfig& model,
                                                                 const Tokenizer& tokenizer) {
  const std::string& path = c.task().multiple_choice().data();
  ASSIGN_OR_RETURN(std::vector<JsonlRecord> records, ReadJsonl(path));
  std::vector<Question> questions;
  for (size_t i = 0; i < Limited(c, records.size()); ++i) {
    const JsonlRecord& rec = records[i];
    ASSIGN_OR_RETURN(std::string context, StringField(path, rec, "context"));
    ASSIGN_OR_RETURN(std::vector<std::string> choices, StringListField(path, rec, "choices"));
    ASSIGN_OR_RETURN(int64_t gold, IntField(path, rec, "gold", 0, JsonFields::kInt32Max));
    if (choices.size() < 2) {
      return RecordError(path, rec, absl::StrCat("field \"choices\" has ", choices.size(),
                                                 " entry; a question needs at least 2 choices"));
    }
    if (gold < 0 || gold >= static_cast<int64_t>(choices.size())) {
      return RecordError(path, rec, absl::StrCat("field \"gold\" is ", gold, " but there are ",
                                                 choices.size(), " choices (0-based index)"));
    }
    Question q;
    q.gold = gold;
    for (const std::string& choice : choices) {
      if (choice.empty()) return RecordError(path, rec, "a choice is an empty string");
      // encode_pair: trailing whitespace of the context belongs to the continuation.
      std::string ctx_text = context, cont_text = choice;
      const size_t keep = ctx_text.find_last_not_of(" \t\n\r\f\v");
      const size_t cut = keep == std::string::npos ? 0 : keep + 1;
      cont_text = ctx_text.substr(cut) + cont_text;
      ctx_text.resize(cut);
      auto whole = tokenizer.Encode(ctx_text + cont_text);
      if (!whole.ok()) return RecordError(path, rec, whole.status().message());
      auto ctx_ids = tokenizer.Encode(ctx_text);
      if (!ctx_ids.ok()) return RecordError(path, rec, ctx_ids.status().message());
      if (whole->size() <= ctx_ids->size()) {
        return RecordError(path, rec, absl::StrCat("choice \"", choice, "\" adds no tokens"));
      }
      LoglikelihoodRequest r;
      r.context.push_back(model.bos_token_id);
      r.context.insert(r.context.end(), ctx_ids->begin(), ctx_ids->end());
      r.continuation.assign(whole->begin() + ctx_ids->size(), whole->end());
      q.choices.push_back(std::move(r));
      q.choice_chars.push_back(CodePoints(choice));
    }
    questions.push_back(std::move(q));
  }
  return std::unique_ptr<EvalTask>(new MultipleChoiceTask(std::move(questions), MaxBatch(c), path));
}

}  // namespace tessera
