#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "launcher/methods/run_methods.h"
#include "launcher/model_bundle.h"
#include "launcher/model_from_flags.h"
#include "launcher/prompts_file.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using nlohmann::json;

constexpr int kResultsTag = 7;

GenerationRequest RequestFromFlags() {
  GenerationRequest r;
  r.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  r.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  r.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  r.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  r.sampling.top_p_before_temperature = absl::GetFlag(FLAGS_top_p_before_temperature);
  r.sampling.seed = absl::GetFlag(FLAGS_seed);
  r.stop = absl::GetFlag(FLAGS_stop);
  r.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  return r;
}

GeneratorOptions OptionsFromFlags(StepRunner* runner) {
  GeneratorOptions o;
  o.runner = runner;
  o.max_batch = absl::GetFlag(FLAGS_max_batch);
  o.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  o.micro_batches = absl::GetFlag(FLAGS_micro_batches);
  return o;
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
  json j = {{"text", r.text},
          {"token_ids", r.token_ids},
          {"prompt_tokens", r.prompt_tokens},
          {"generated_tokens", r.token_ids.size()},
          {"finish_reason", FinishReasonName(r.finish_reason)},
          {"timings",
           {{"time_to_first_token_ms", r.time_to_first_token_ms}, {"total_ms", r.total_ms}}}};
  if (HasCounters(r.counters)) j["method_counters"] = MethodCountersJson(r.counters);
  return j;
}

struct Inputs {
  std::vector<std::string> texts;
  std::vector<json> ids;  // echoed "id" fields (null when absent)
  std::vector<GenerationRequest> requests;
};

// Every rank reads and tokenizes all prompts (identically), so input errors are the same on
// every rank and printed once.
absl::StatusOr<Inputs> ReadInputs(const ModelBundle& b) {
  Inputs in;
  if (FlagWasGiven("prompt")) {
    GenerationRequest r = RequestFromFlags();
    ASSIGN_OR_RETURN(r.prompt_ids, EncodePrompt(b, absl::GetFlag(FLAGS_prompt), "--prompt"));
    r.source = "--prompt";
    in.texts.push_back(absl::GetFlag(FLAGS_prompt));
    in.ids.push_back(nullptr);
    in.requests.push_back(r);
    return in;
  }
  const std::string path = absl::GetFlag(FLAGS_prompts);
  ASSIGN_OR_RETURN(std::vector<PromptSpec> specs, ReadPromptsFile(path, RequestFromFlags()));
  for (PromptSpec& spec : specs) {
    spec.request.source = absl::StrCat(path, ":", spec.line);
    ASSIGN_OR_RETURN(spec.request.prompt_ids, EncodePrompt(b, spec.text, spec.request.source));
    in.texts.push_back(spec.text);
    in.ids.push_back(spec.id);
    in.requests.push_back(spec.request);
  }
  return in;
}

// Runs this replica's share (every dp-th request), keyed by global index for sampling.
absl::StatusOr<std::vector<std::pair<size_t, GenerationResult>>> RunReplica(
    Job& job, ModelBundle& b, const Inputs& in, bool stream, StepRunner* runner) {
  const WorldLayout& l = job.layout();
  std::vector<GenerationRequest> mine;
  std::vector<size_t> index;
  for (size_t i = l.dp_rank(); i < in.requests.size(); i += l.dp) {
    mine.push_back(in.requests[i]);
    mine.back().id = i;
    index.push_back(i);
  }
  Generator generator(b.model.get(), b.tokenizer.get(), OptionsFromFlags(runner));
  TextCallback on_text = nullptr;
  if (stream) {
    on_text = [](size_t, absl::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  }
  ASSIGN_OR_RETURN(auto results, generator.Generate(mine, on_text));
  std::vector<std::pair<size_t, GenerationResult>> out;
  for (size_t k = 0; k < results.size(); ++k) out.push_back({index[k], std::move(results[k])});
  return out;
}

// Rank 0 collects every replica's results (each replica's rank with pp_rank 0 and tp_rank 0
// sends them) and returns them in input order; other ranks return an empty list.
absl::StatusOr<std::vector<json>> CollectResults(
    Job& job, size_t total, std::vector<std::pair<size_t, GenerationResult>> mine) {
  const WorldLayout& l = job.layout();
  Communicator& world = *job.groups.world;
  std::vector<json> lines(total);
  auto place = [&](const std::vector<std::pair<size_t, GenerationResult>>& part) {
    for (const auto& [i, r] : part) lines[i] = ResultJson(r);
  };
  const bool replica_leader = l.tp_rank() == 0 && l.pp_rank() == 0;
  if (job.is_root()) {
    place(mine);
    for (int d = 1; d < l.dp; ++d) {
      ASSIGN_OR_RETURN(std::string payload, RecvString(world, d * l.tp * l.pp, kResultsTag));
      json part = json::parse(payload, nullptr, false);
      if (part.is_discarded()) return absl::InternalError("malformed results from a replica");
      for (const json& item : part) lines[item["index"].get<size_t>()] = item["result"];
    }
    return lines;
  }
  if (replica_leader) {
    json part = json::array();
    for (const auto& [i, r] : mine) part.push_back({{"index", i}, {"result", ResultJson(r)}});
    RETURN_IF_ERROR(SendString(world, part.dump(-1, ' ', false, json::error_handler_t::replace), 0,
                               kResultsTag));
  }
  return std::vector<json>();
}

absl::Status WriteResults(const Inputs& in, std::vector<json> lines) {
  std::ofstream file;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (!output.empty()) {
    file.open(output);
    if (!file) return absl::PermissionDeniedError(absl::StrCat("--output: cannot write ", output));
  }
  std::ostream& out = output.empty() ? std::cout : file;
  for (size_t i = 0; i < lines.size(); ++i) {
    lines[i]["index"] = i;
    if (!in.ids[i].is_null()) lines[i]["id"] = in.ids[i];
    lines[i]["prompt"] = in.texts[i];
    out << lines[i].dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunGenerate(Job& job, const config::MethodSettings& method_settings) {
  const bool has_prompt = FlagWasGiven("prompt");
  const bool has_file = FlagWasGiven("prompts");
  if (has_prompt == has_file) {
    return absl::InvalidArgumentError(
        "generate needs exactly one of --prompt TEXT or --prompts FILE.jsonl");
  }
  ASSIGN_OR_RETURN(ModelBundle bundle, LoadModelFromFlags(job, method_settings,
                                                          /*require_tokenizer=*/true));

  absl::StatusOr<Inputs> inputs = ReadInputs(bundle);
  RETURN_IF_ERROR(CheckPhase(job, inputs.status()));
  const bool stream = has_prompt && job.is_root();
  auto mine = RunReplica(job, bundle, *inputs, stream, bundle.methods.runner);
  RETURN_IF_ERROR(CheckPhase(job, mine.status()));
  ASSIGN_OR_RETURN(std::vector<json> lines,
                   CollectResults(job, inputs->requests.size(), std::move(mine).value()));
  if (!job.is_root()) return absl::OkStatus();
  if (has_prompt) {
    std::fputc('\n', stdout);
    const json& r = lines[0];
    std::fprintf(stderr, "[tessera] %d tokens, finish_reason=%s, %.1f ms to first token, %.1f ms\n",
                 r["generated_tokens"].get<int>(), r["finish_reason"].get<std::string>().c_str(),
                 r["timings"]["time_to_first_token_ms"].get<double>(),
                 r["timings"]["total_ms"].get<double>());
    return absl::OkStatus();
  }
  return WriteResults(*inputs, std::move(lines));
}

}  // namespace tessera
