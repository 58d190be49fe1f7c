#include "tests/methods/harp/harp_harness.h"

#include "kernels/status_macros.h"
#include "tests/methods/early_exit/free_harness.h"

namespace tessera::testing {

absl::StatusOr<HarpRun> GenerateWithHarp(Backend* backend, ProcessGroups* groups,
                                         const HarpRunSpec& spec) {
  ASSIGN_OR_RETURN(auto model, LoadTinyModel(backend, groups, 0));
  GeneratorOptions options;
  options.max_batch = spec.max_batch;
  options.micro_batches = spec.micro_batches;
  std::unique_ptr<HarpRunner> runner;
  if (spec.settings != nullptr) {
    HarpRunnerOptions harp = spec.extra;
    harp.settings = *spec.settings;
    ASSIGN_OR_RETURN(runner, HarpRunner::Create(model.get(), harp));
    options.runner = runner.get();
  }
  Generator generator(model.get(), nullptr, options);
  HarpRun run;
  ASSIGN_OR_RETURN(run.results, generator.Generate(spec.requests));
  if (runner != nullptr) run.decisions = runner->decisions();
  return run;
}

config::HarpSettings HarpSettings(float theta_bits, float delta, float beta) {
  config::HarpSettings s;
  s.set_theta_bits(theta_bits);
  s.set_delta(delta);
  s.set_beta_vanilla(beta);
  s.set_record_entropy(true);
  return s;
}

std::vector<GenerationRequest> CodeRequests(int32_t new_tokens, SamplingParams sampling) {
  std::vector<GenerationRequest> requests;
  for (const std::vector<int32_t>& prompt : TinyPrompts()) {
    GenerationRequest r;
    r.prompt_ids = prompt;
    r.max_new_tokens = new_tokens;
    r.ignore_eos = true;
    r.sampling = sampling;
    r.id = requests.size();
    requests.push_back(r);
  }
  return requests;
}

double Counter(const GenerationResult& r, const char* name) {
  auto it = r.counters.values.find(name);
  return it == r.counters.values.end() ? 0.0 : it->second;
}

}  // namespace tessera::testing
