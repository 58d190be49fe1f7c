#include "tests/layouts/layout_check.h"

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/status_macros.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "runtime/vocab_parallel.h"
#include "tests/golden/golden_fixture.h"
#include "tests/test_util.h"

namespace tessera::testing {
namespace {

// Full logits of every prompt (gathered over tp; last stage only) and greedy tokens.
struct Observed {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> tokens;
};

absl::StatusOr<Observed> Observe(const std::string& dir, const ModelParallelism& par,
                                 const std::vector<std::vector<int32_t>>& prompts,
                                 const LayoutCheckOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(auto model, LlamaModel::Load(dir, backend.get(), par));
  Observed out;
  for (const auto& ids : prompts) {
    ASSIGN_OR_RETURN(auto cache, model->MakeCache(1, static_cast<int64_t>(ids.size())));
    Tensor local, full;
    RETURN_IF_ERROR(model->Forward(AllPositions(ids), *cache, &local));
    if (model->plan().last_stage()) {
      RETURN_IF_ERROR(GatherLogits(par.tp, model->plan(), model->config().vocab_size, local, &full));
      out.logits.emplace_back(full.data<float>(), full.data<float>() + full.numel());
    }
  }
  std::vector<GenerationRequest> requests;
  for (const auto& ids : prompts) {
    GenerationRequest r;
    r.prompt_ids = ids;
    r.max_new_tokens = options.new_tokens;
    r.ignore_eos = true;
    requests.push_back(r);
  }
  Generator generator(model.get(), nullptr,
                      {.max_batch = 3, .micro_batches = 2, .max_seq_len = options.max_seq_len});
  ASSIGN_OR_RETURN(auto results, generator.Generate(requests));
  for (const auto& r : results) out.tokens.push_back(r.token_ids);
  return out;
}

}  // namespace

absl::Status CheckLayout(const std::string& dir, ProcessGroups& groups,
                         const LayoutCheckOptions& options) {
  const WorldLayout& layout = groups.layout;
  const std::string me = layout.Prefix();
  ASSIGN_OR_RETURN(auto golden, SafetensorsFile::Open(dir + "/golden.safetensors"));
  std::vector<std::vector<int32_t>> prompts, greedy;
  for (int p = 0; p < options.prompts; ++p) {
    prompts.push_back(ReadIds(*golden, absl::StrCat("prompt", p, ".input_ids")));
    greedy.push_back(ReadIds(*golden, absl::StrCat("prompt", p, ".greedy")));
  }
  ModelParallelism par{layout, groups.tp.get(), groups.pp.get()};
  ASSIGN_OR_RETURN(Observed got, Observe(dir, par, prompts, options));
  // The single-rank reference, computed by this rank alone (the fixtures are tiny).
  ASSIGN_OR_RETURN(Observed want, Observe(dir, ModelParallelism{}, prompts, options));
  for (int p = 0; p < options.prompts; ++p) {
    if (got.tokens[p] != greedy[p]) {
      return absl::InternalError(absl::StrCat(me, dir, " prompt ", p,
                                              ": greedy tokens differ from transformers'"));
    }
    if (!layout.last_stage()) continue;
    const double err = RelativeError(got.logits[p].data(), want.logits[p].data(), want.logits[p].size());
    if (!(err < 1e-5)) {
      return absl::InternalError(absl::StrCat(me, dir, " prompt ", p, ": logits differ from the ",
                                              "single-rank run by ", err, " (relative)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera::testing
