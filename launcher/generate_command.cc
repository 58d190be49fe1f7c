#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "launcher/model_bundle.h"
#include "launcher/prompts_file.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using nlohmann::json;

GenerationRequest RequestFromFlags() {
  GenerationRequest r;
  r.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  r.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  r.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  r.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  r.sampling.seed = absl::GetFlag(FLAGS_seed);
  r.stop = absl::GetFlag(FLAGS_stop);
  r.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  return r;
}

// BOS + the prompt's tokens. `where` prefixes messages ("--prompt", "prompts.jsonl:3").
absl::StatusOr<std::vector<int32_t>> EncodePrompt(const ModelBundle& b, const std::string& text,
                                                  const std::string& where) {
  if (text.empty()) return absl::InvalidArgumentError(where + ": the prompt is empty");
  auto ids = b.tokenizer->Encode(text);
  if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", ids.status().message()));
  ids->insert(ids->begin(), b.model->config().bos_token_id);
  return ids;
}

json ResultJson(const GenerationResult& r) {
  return {{"text", r.text},
          {"token_ids", r.token_ids},
          {"prompt_tokens", r.prompt_tokens},
          {"generated_tokens", r.token_ids.size()},
          {"finish_reason", FinishReasonName(r.finish_reason)},
          {"timings",
           {{"time_to_first_token_ms", r.time_to_first_token_ms}, {"total_ms", r.total_ms}}}};
}

GeneratorOptions OptionsFromFlags() {
  GeneratorOptions o;
  o.max_batch = absl::GetFlag(FLAGS_max_batch);
  o.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  return o;
}

absl::Status GenerateOne(ModelBundle& b) {
  GenerationRequest request = RequestFromFlags();
  ASSIGN_OR_RETURN(request.prompt_ids, EncodePrompt(b, absl::GetFlag(FLAGS_prompt), "--prompt"));
  Generator generator(b.model.get(), b.tokenizer.get(), OptionsFromFlags());
  ASSIGN_OR_RETURN(auto results, generator.Generate({request}, [](size_t, absl::string_view text) {
                     std::fwrite(text.data(), 1, text.size(), stdout);
                     std::fflush(stdout);
                   }));
  std::fputc('\n', stdout);
  std::fprintf(stderr, "[tessera] %zu tokens, finish_reason=%s, %.1f ms to first token, %.1f ms\n",
               results[0].token_ids.size(), FinishReasonName(results[0].finish_reason),
               results[0].time_to_first_token_ms, results[0].total_ms);
  return absl::OkStatus();
}

absl::Status GenerateFile(ModelBundle& b) {
  const std::string path = absl::GetFlag(FLAGS_prompts);
  ASSIGN_OR_RETURN(std::vector<PromptSpec> specs, ReadPromptsFile(path, RequestFromFlags()));
  std::vector<GenerationRequest> requests;
  for (PromptSpec& spec : specs) {
    ASSIGN_OR_RETURN(spec.request.prompt_ids,
                     EncodePrompt(b, spec.text, absl::StrCat(path, ":", spec.line)));
    requests.push_back(spec.request);
  }
  Generator generator(b.model.get(), b.tokenizer.get(), OptionsFromFlags());
  ASSIGN_OR_RETURN(auto results, generator.Generate(requests));
  std::ofstream file;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (!output.empty()) {
    file.open(output);
    if (!file) return absl::PermissionDeniedError(absl::StrCat("--output: cannot write ", output));
  }
  std::ostream& out = output.empty() ? std::cout : file;
  for (size_t i = 0; i < results.size(); ++i) {
    json line = ResultJson(results[i]);
    line["index"] = i;
    if (!specs[i].id.is_null()) line["id"] = specs[i].id;
    line["prompt"] = specs[i].text;
    out << line.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunGenerate() {
  const bool has_prompt = FlagWasGiven("prompt");
  const bool has_file = FlagWasGiven("prompts");
  if (has_prompt == has_file) {
    return absl::InvalidArgumentError(
        "generate needs exactly one of --prompt TEXT or --prompts FILE.jsonl");
  }
  ASSIGN_OR_RETURN(ModelBundle bundle, LoadModelBundle(absl::GetFlag(FLAGS_model),
                                                       absl::GetFlag(FLAGS_backend),
                                                       /*require_tokenizer=*/true));
  return has_prompt ? GenerateOne(bundle) : GenerateFile(bundle);
}

}  // namespace tessera
