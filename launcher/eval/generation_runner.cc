#include "launcher/eval/generation_runner.h"

#include "kernels/status_macros.h"
#include "launcher/eval/tasks.h"

namespace tessera {

GenerationRequest RequestFromSampling(const config::RunConfig& c, int32_t default_max_new_tokens) {
  GenerationRequest r;
  const config::Sampling& s = c.sampling();
  r.max_new_tokens = s.max_new_tokens() > 0 ? s.max_new_tokens() : default_max_new_tokens;
  r.sampling.temperature = s.temperature();
  r.sampling.top_k = s.top_k();
  r.sampling.top_p = s.top_p() > 0 ? s.top_p() : 1.0f;
  r.sampling.top_p_before_temperature = s.top_p_before_temperature();
  r.sampling.seed = c.seed();
  r.stop.assign(s.stop().begin(), s.stop().end());
  return r;
}

absl::StatusOr<std::vector<GenerationResult>> GenerateForTask(
    std::vector<GenerationRequest> requests, const std::vector<size_t>& indices, EvalContext& ctx) {
  const config::RunConfig& c = *ctx.config;
  GeneratorOptions options;
  options.max_batch = MaxBatch(c);
  options.max_seq_len = c.model().max_seq_len();
  options.micro_batches = c.layout().micro_batches();
  options.runner = ctx.runner;
  Generator generator(ctx.model, ctx.tokenizer, options);
  std::vector<GenerationResult> results;
  for (size_t begin = 0; begin < requests.size(); begin += options.max_batch) {
    const size_t end = std::min(requests.size(), begin + options.max_batch);
    std::vector<GenerationRequest> chunk(requests.begin() + begin, requests.begin() + end);
    for (size_t k = 0; k < chunk.size(); ++k) chunk[k].id = indices[begin + k];
    ASSIGN_OR_RETURN(std::vector<GenerationResult> part, generator.Generate(chunk));
    for (GenerationResult& r : part) {
      ctx.tokens_processed += r.prompt_tokens + static_cast<int64_t>(r.token_ids.size());
      results.push_back(std::move(r));
    }
    if (ctx.progress) ctx.progress(static_cast<int64_t>(end - begin));
  }
  return results;
}

}  // namespace tessera
