// Multiple choice by log-likelihood, scored as lm-evaluation-harness does: each choice is a
// continuation of the context; acc takes the choice with the highest summed log-probability,
// acc_norm the highest log-probability per character of the choice text, acc_bytes per UTF-8
// byte. Context and continuation are tokenized as lm-evaluation-harness's encode_pair: trailing
// whitespace of the context (Python's str.rstrip(), Unicode spaces included) moves to the
// continuation, and the continuation's ids are those of context + continuation past the
// context's own ids. task.bos decides whether the context starts with BOS.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/eval/jsonl.h"
#include "launcher/eval/python_text.h"
#include "launcher/eval/tasks.h"
#include "runtime/scorer.h"

namespace tessera {
namespace {

struct Question {
  std::vector<LoglikelihoodRequest> choices;
  std::vector<double> choice_chars;  // length of each choice text in characters (code points)
  std::vector<double> choice_bytes;  // and in UTF-8 bytes
  int64_t gold = 0;
};

class MultipleChoiceTask final : public EvalTask {
 public:
  MultipleChoiceTask(std::vector<Question> questions, int32_t max_batch, std::string data,
                     std::string bos)
      : questions_(std::move(questions)),
        max_batch_(max_batch),
        data_(std::move(data)),
        bos_(std::move(bos)) {}

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
        size_t pred = 0, pred_norm = 0, pred_bytes = 0;
        for (size_t j = 0; j < q.choices.size(); ++j, ++next) {
          lls.push_back(scored[next].logprob);
          greedy.push_back(scored[next].is_greedy);
          if (lls[j] > lls[pred]) pred = j;
          if (lls[j] / q.choice_chars[j] > lls[pred_norm] / q.choice_chars[pred_norm]) pred_norm = j;
          if (lls[j] / q.choice_bytes[j] > lls[pred_bytes] / q.choice_bytes[pred_bytes]) {
            pred_bytes = j;
          }
        }
        records.push_back({{"index", indices[k]},
                           {"gold", q.gold},
                           {"loglikelihoods", lls},
                           {"is_greedy", greedy},
                           {"pred", pred},
                           {"pred_norm", pred_norm},
                           {"acc", static_cast<int64_t>(pred) == q.gold ? 1.0 : 0.0},
                           {"acc_norm", static_cast<int64_t>(pred_norm) == q.gold ? 1.0 : 0.0},
                           {"acc_bytes", static_cast<int64_t>(pred_bytes) == q.gold ? 1.0 : 0.0}});
      }
      if (ctx.progress) ctx.progress(static_cast<int64_t>(end - begin));
    }
    return records;
  }

  nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const override {
    nlohmann::json metrics;
    for (const char* metric : {"acc", "acc_norm", "acc_bytes"}) {
      std::vector<double> values;
      for (const auto& r : records) values.push_back(r[metric].get<double>());
      const MeanStderr m = MeanWithStderr(values);
      metrics[metric] = m.mean;
      metrics[absl::StrCat(metric, "_stderr")] = m.stderr_;
    }
    return metrics;
  }

  nlohmann::json Describe() const override {
    return {{"data", data_}, {"output_type", "multiple_choice"}, {"bos", bos_}};
  }

 private:
  std::vector<Question> questions_;
  int32_t max_batch_;
  std::string data_, bos_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalTask>> MakeMultipleChoiceTask(const config::RunConfig& c,
                                                                 const ModelConfig& model,
                                                                 const Tokenizer& tokenizer) {
  const std::string& path = c.task().multiple_choice().data();
  const bool lm_eval = c.task().bos() == config::BOS_LM_EVAL;
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
      const size_t cut = PythonRstripLength(context);
      const std::string ctx_text = context.substr(0, cut);
      const std::string cont_text = context.substr(cut) + choice;
      LoglikelihoodRequest r;
      if (ctx_text.empty() && lm_eval) {
        // lm-evaluation-harness scores an empty context after its prefix token; a context of
        // whitespace only would leave the first continuation token without any context.
        if (!context.empty()) {
          return RecordError(path, rec, "the context is whitespace only; with task.bos "
                                        "BOS_LM_EVAL its first token would have no context");
        }
        r.context = {model.bos_token_id};
        auto cont = tokenizer.Encode(choice);
        if (!cont.ok()) return RecordError(path, rec, cont.status().message());
        r.continuation = std::move(cont).value();
      } else {
        auto whole = tokenizer.Encode(ctx_text + cont_text);
        if (!whole.ok()) return RecordError(path, rec, whole.status().message());
        auto ctx_ids = tokenizer.Encode(ctx_text);
        if (!ctx_ids.ok()) return RecordError(path, rec, ctx_ids.status().message());
        if (whole->size() <= ctx_ids->size()) {
          return RecordError(path, rec, absl::StrCat("choice \"", choice, "\" adds no tokens"));
        }
        if (!lm_eval) r.context.push_back(model.bos_token_id);
        r.context.insert(r.context.end(), ctx_ids->begin(), ctx_ids->end());
        r.continuation.assign(whole->begin() + ctx_ids->size(), whole->end());
      }
      if (r.continuation.empty()) {
        return RecordError(path, rec, absl::StrCat("choice \"", choice, "\" adds no tokens"));
      }
      q.choices.push_back(std::move(r));
      q.choice_chars.push_back(static_cast<double>(PythonLength(choice)));
      q.choice_bytes.push_back(static_cast<double>(choice.size()));
    }
    questions.push_back(std::move(q));
  }
  return std::unique_ptr<EvalTask>(new MultipleChoiceTask(std::move(questions), MaxBatch(c), path,
                                                          BosName(c.task().bos())));
}

}  // namespace tessera
