#include "tests/methods/early_exit/free_harness.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/tokenizer.h"

namespace tessera::testing {

absl::StatusOr<Decoded> Decode(LlamaModel& model, KvCache& cache, StepRunner& runner,
                               FreeRunner* free, const std::vector<std::vector<int32_t>>& prompts,
                               const DecodeOptions& options) {
  const size_t n = prompts.size();
  const int64_t vocab = model.config().vocab_size;
  Decoded out;
  out.tokens.resize(n);
  out.logits.resize(n);
  out.deep.resize(n);
  std::vector<std::vector<int32_t>> feed = prompts;
  std::vector<int32_t> length(n, 0);
  for (size_t i = 0; i < n; ++i) {
    cache.Clear(static_cast<int64_t>(i));
    RETURN_IF_ERROR(runner.StartSequence(static_cast<int32_t>(i), i));
  }
  const size_t groups = std::min<size_t>(std::max(1, options.micro_batches), n);
  auto group_begin = [&](size_t g) { return n * g / groups; };
  Tensor host(DType::kF32, {1});
  for (int step = 0; step < options.steps; ++step) {
    std::vector<ForwardBatch> batches(groups);
    for (size_t g = 0; g < groups; ++g) {
      ForwardBatch& b = batches[g];
      b.step = step;
      b.micro_batch = static_cast<int32_t>(g);
      for (size_t i = group_begin(g); i < group_begin(g + 1); ++i) {
        for (size_t j = 0; j < feed[i].size(); ++j) {
          b.tokens.push_back(feed[i][j]);
          b.positions.push_back(length[i] + static_cast<int32_t>(j));
          b.slots.push_back(static_cast<int32_t>(i));
        }
        b.logit_rows.push_back(static_cast<int32_t>(b.tokens.size()) - 1);
      }
    }
    StepReduction greedy;
    greedy.reduce = [&](size_t g, const ForwardBatch&,
                        const ForwardOutput& o) -> absl::StatusOr<std::vector<float>> {
      ASSIGN_OR_RETURN(const std::vector<int32_t> ids, model.vocab().ArgMax(o.logits));
      if (options.record_logits) {
        RETURN_IF_ERROR(model.vocab().GatherFull(o.logits, vocab, &host));
        for (size_t j = 0; j < o.logit_rows.size(); ++j) {
          const size_t seq = group_begin(g) + o.logit_rows[j];
          auto& rows = out.logits[seq];
          rows.resize(step + 1);
          rows[step].assign(host.data<float>() + j * vocab, host.data<float>() + (j + 1) * vocab);
        }
      }
      return std::vector<float>(ids.begin(), ids.end());
    };
    const size_t decided = free != nullptr ? free->decisions().size() : 0;
    ASSIGN_OR_RETURN(const std::vector<float> words, runner.Run(batches, cache, greedy));
    if (words.size() != n) {
      return absl::InternalError(absl::StrCat("the runner returned ", words.size(), " words for ",
                                              n, " sequences"));
    }
    size_t d = decided;
    for (size_t i = 0; i < n; ++i) {
      const int32_t token = static_cast<int32_t>(words[i]);
      out.tokens[i].push_back(token);
      bool deep = true;
      if (free != nullptr && step > 0) deep = free->decisions().at(d++) == 0;
      out.deep[i].push_back(deep);
      length[i] += static_cast<int32_t>(feed[i].size());
      feed[i] = {token};
    }
  }
  if (options.flush && free != nullptr) {
    std::vector<int32_t> slots;
    for (size_t i = 0; i < n; ++i) slots.push_back(static_cast<int32_t>(i));
    RETURN_IF_ERROR(free->Flush(slots, cache));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadTinyModel(Backend* backend, ProcessGroups* groups,
                                                          int exit_layer) {
  ModelParallelism parallel;
  if (groups != nullptr) parallel = {groups->layout, groups->tp.get(), groups->pp.get()};
  ModelOptions options;
  if (exit_layer > 0) options.head_after_layers = {exit_layer - 1};
  return LlamaModel::Load(kTinyModel, backend, parallel, options);
}

config::EarlyExitSettings FreeSettings(int exit_layer, float tau) {
  config::EarlyExitSettings s;
  s.set_policy(config::EarlyExitSettings::FREE);
  s.set_exit_layer(exit_layer);
  s.set_threshold(tau);
  return s;
}

std::vector<std::vector<int32_t>> TinyPrompts() {
  auto tokenizer = Tokenizer::Load(absl::StrCat(kTinyModel, "/tokenizer.model"));
  std::vector<std::vector<int32_t>> prompts;
  for (const char* text : {"def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
                           "import os\n\nclass ",
                           "for i in range(10):\n    total = 0\n    for j in range(i):\n"}) {
    std::vector<int32_t> ids = {1};
    if (tokenizer.ok()) {
      auto encoded = (*tokenizer)->Encode(text);
      if (encoded.ok()) ids.insert(ids.end(), encoded->begin(), encoded->end());
    }
    prompts.push_back(ids);
  }
  return prompts;
}

}  // namespace tessera::testing
