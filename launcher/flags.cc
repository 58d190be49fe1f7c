#include "launcher/flags.h"

#include <set>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/memory_plan.h"

ABSL_FLAG(std::string, model, "", "Model directory (config.json, *.safetensors, tokenizer.model)");
ABSL_FLAG(std::string, backend, "cpu", "Compute backend: cpu or cuda");
ABSL_FLAG(std::string, prompt, "", "Prompt text (generate)");
ABSL_FLAG(std::string, prompts, "",
          "JSONL file, one {\"prompt\": ...} object per line (generate); optional per-line "
          "fields: id, max_new_tokens, temperature, top_k, top_p, seed, stop");
ABSL_FLAG(std::string, output, "", "Where --prompts results go (JSONL); default stdout");
ABSL_FLAG(int32_t, max_new_tokens, 64, "Tokens to generate at most per prompt");
ABSL_FLAG(float, temperature, 0.0f, "Sampling temperature; 0 is greedy");
ABSL_FLAG(int32_t, top_k, 0, "Keep only the k most likely tokens (0: off)");
ABSL_FLAG(float, top_p, 1.0f, "Nucleus sampling mass in (0, 1] (1: off)");
ABSL_FLAG(bool, top_p_before_temperature, false,
          "Cut the nucleus from the untempered softmax (HARP's reference processor order)");
ABSL_FLAG(uint64_t, seed, 0, "Random seed; the draws depend only on (seed, prompt index, step)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "Comma-separated stop strings");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past end-of-sequence tokens");
ABSL_FLAG(int32_t, max_batch, 16, "Sequences decoded together at most");
ABSL_FLAG(int32_t, max_seq_len, 0,
          "KV cache length per sequence; 0: prompt + max_new_tokens, capped at the model's "
          "context (max_position_embeddings). Above max_position_embeddings with a rope_scaling "
          "(dynamic, linear, llama3, yarn) in config.json: the longer context");
ABSL_FLAG(int32_t, prompt_tokens, 128, "Prompt length for bench");
ABSL_FLAG(int32_t, decode_tokens, 32, "Decode steps timed by bench");
ABSL_FLAG(int32_t, batch, 1, "Sequences per step for bench");
ABSL_FLAG(int32_t, threads, 0, "CPU threads per rank (0: OpenMP's default, one per core)");
ABSL_FLAG(int32_t, tp, 1, "Tensor-parallel ranks per model replica");
ABSL_FLAG(int32_t, pp, 1, "Pipeline stages per model replica");
ABSL_FLAG(int32_t, dp, 1, "Data-parallel replicas; world size = dp x pp x tp");
ABSL_FLAG(std::vector<std::string>, stage_layers, {},
          "Layers per pipeline stage, comma-separated (default: balanced)");
ABSL_FLAG(int32_t, micro_batches, 0, "Micro-batches per step (0: one per pipeline stage)");
ABSL_FLAG(int32_t, comm_timeout_s, 300,
          "Seconds a collective may wait for the other ranks before the job fails");
ABSL_FLAG(std::string, config, "", "Run configuration (configs/run_config.proto, text format)");
ABSL_FLAG(std::string, method, "",
          "Method settings (a MethodSettings of configs/method_settings.proto, text format; "
          "examples in configs/methods/); replaces the run config's method section");
ABSL_FLAG(std::string, output_dir, "",
          "Where eval writes results_*.json and samples_*.jsonl, and calibrate th.txt / sdc.txt");
ABSL_FLAG(std::string, host, "127.0.0.1", "serve: the address to listen on (0.0.0.0: every interface)");
ABSL_FLAG(int32_t, port, 8000, "serve: the TCP port (0: any free port, printed at start)");
ABSL_FLAG(int32_t, max_waiting_requests, 256,
          "serve: requests that may wait for the engine; more are answered 429");
ABSL_FLAG(std::string, served_model_name, "",
          "serve: the model name clients send and /v1/models lists (default: the --model "
          "directory's name)");
ABSL_FLAG(std::string, chat_template, "none",
          "serve: the prompt template of /v1/chat/completions: none (refused) or llama-2 "
          "(Llama-2 / CodeLlama chat models)");
ABSL_FLAG(int32_t, limit, 0, "Evaluate (eval) or calibrate on (calibrate) only the first N samples (0: all)");
ABSL_FLAG(std::string, data, "",
          "calibrate: JSONL calibration texts, one object per line with a \"text\", \"prompt\" "
          "or \"context\" string (an eval task's data file works as it is)");
ABSL_FLAG(double, calib_add_sigma, 0.0,
          "calibrate: theta = mean + c * std of the rows' thresholds per bin; c >= 0");
ABSL_FLAG(bool, calib_tac, false,
          "calibrate: run each sparsified row with its exact top-k while calibrating, so that "
          "deeper layers calibrate on sparse activations");
ABSL_FLAG(double, calib_sample_frac, 0.1,
          "calibrate: in (0, 1]; 1 records every eligible row, less records half of each "
          "sample's eligible rows, favouring rarely seen lengths");
ABSL_FLAG(bool, cuda_graphs, false,
          "Replay decode steps as CUDA graphs (CUDA backend, one rank per replica: tp=pp=1)");
ABSL_FLAG(std::string, device_memory, "",
          "Memory per device for plan, e.g. 80GiB, 80GB or 81920MiB");
ABSL_FLAG(std::string, dtype, "",
          "Weight dtype for plan: bf16, f16 or f32 (default: config.json's torch_dtype)");
ABSL_FLAG(std::string, kv_dtype, "f32",
          "KV-cache element type: f32 (exact), bf16 or f16 (half the cache memory; K/V rounded "
          "to nearest even, F32 accumulation). generate, eval and bench allocate it; plan sizes "
          "it");
ABSL_FLAG(double, memory_utilization, 0.90,
          "Fraction of device memory plan may use, in (0, 1]");
ABSL_FLAG(std::string, workspace, "2GiB",
          "Memory per device plan reserves for activations and buffers");
ABSL_FLAG(bool, check_rank_agreement, false,
          "All-gather every step's method decisions over the tensor-parallel group and end the "
          "job naming the step and the ranks that differ (a debugging aid; costs a collective "
          "per step)");
ABSL_FLAG(bool, json, false, "plan: print one JSON object instead of a table");

namespace tessera {
namespace {

std::set<std::string>& GivenFlags() {
  static std::set<std::string> given;
  return given;
}

}  // namespace

bool FlagWasGiven(const std::string& name) { return GivenFlags().count(name) > 0; }

std::vector<std::string> GivenFlagNames() {
  return std::vector<std::string>(GivenFlags().begin(), GivenFlags().end());
}

std::vector<std::string> TakeRepeatedFlag(std::vector<std::string>* args, const std::string& name) {
  std::vector<std::string> values, rest;
  const std::string bare = "--" + name, with_value = bare + "=";
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string& a = (*args)[i];
    if (a == bare && i + 1 < args->size()) {
      values.push_back((*args)[++i]);
    } else if (a.rfind(with_value, 0) == 0) {
      values.push_back(a.substr(with_value.size()));
    } else {
      rest.push_back(a);
    }
  }
  *args = std::move(rest);
  return values;
}

void ApplyRunConfigToFlags(const config::RunConfig& c) {
  auto set = [](auto* flag, const char* name, bool present, auto value) {
    if (present && !FlagWasGiven(name)) absl::SetFlag(flag, value);
  };
  set(&FLAGS_model, "model", !c.model().path().empty(), c.model().path());
  set(&FLAGS_backend, "backend", !c.model().backend().empty(), c.model().backend());
  set(&FLAGS_max_seq_len, "max_seq_len", c.model().max_seq_len() > 0, c.model().max_seq_len());
  set(&FLAGS_kv_dtype, "kv_dtype", !c.model().kv_dtype().empty(), c.model().kv_dtype());
  set(&FLAGS_tp, "tp", c.layout().tp() > 0, c.layout().tp());
  set(&FLAGS_pp, "pp", c.layout().pp() > 0, c.layout().pp());
  set(&FLAGS_dp, "dp", c.layout().dp() > 0, c.layout().dp());
  set(&FLAGS_micro_batches, "micro_batches", c.layout().micro_batches() > 0,
      c.layout().micro_batches());
  set(&FLAGS_comm_timeout_s, "comm_timeout_s", c.layout().comm_timeout_s() > 0,
      c.layout().comm_timeout_s());
  std::vector<std::string> stage_layers;
  for (int32_t n : c.layout().stage_layers()) stage_layers.push_back(absl::StrCat(n));
  set(&FLAGS_stage_layers, "stage_layers", !stage_layers.empty(), stage_layers);
  set(&FLAGS_temperature, "temperature", c.sampling().temperature() > 0, c.sampling().temperature());
  set(&FLAGS_top_k, "top_k", c.sampling().top_k() > 0, c.sampling().top_k());
  set(&FLAGS_top_p, "top_p", c.sampling().top_p() > 0, c.sampling().top_p());
  set(&FLAGS_top_p_before_temperature, "top_p_before_temperature",
      c.sampling().top_p_before_temperature(), c.sampling().top_p_before_temperature());
  set(&FLAGS_max_new_tokens, "max_new_tokens", c.sampling().max_new_tokens() > 0,
      c.sampling().max_new_tokens());
  std::vector<std::string> stop(c.sampling().stop().begin(), c.sampling().stop().end());
  set(&FLAGS_stop, "stop", !stop.empty(), stop);
  set(&FLAGS_seed, "seed", c.seed() > 0, c.seed());
  set(&FLAGS_max_batch, "max_batch", c.max_batch() > 0, c.max_batch());
}

absl::Status ValidateFlagValues() {
  struct IntFlag {
    const char* name;  // as users spell it
    int64_t value;
    int64_t min;
    const char* meaning;  // of the smallest values, or ""
  };
  const IntFlag flags[] = {
      {"max-new-tokens", absl::GetFlag(FLAGS_max_new_tokens), 1, ""},
      {"top-k", absl::GetFlag(FLAGS_top_k), 0, " (0: off)"},
      {"max-batch", absl::GetFlag(FLAGS_max_batch), 1, ""},
      {"max-seq-len", absl::GetFlag(FLAGS_max_seq_len), 0,
       " (0: prompt + max_new_tokens, capped at the model's context)"},
      {"prompt-tokens", absl::GetFlag(FLAGS_prompt_tokens), 1, ""},
      {"decode-tokens", absl::GetFlag(FLAGS_decode_tokens), 1, ""},
      {"batch", absl::GetFlag(FLAGS_batch), 1, ""},
      {"threads", absl::GetFlag(FLAGS_threads), 0, " (0: one per core)"},
      {"tp", absl::GetFlag(FLAGS_tp), 1, ""},
      {"pp", absl::GetFlag(FLAGS_pp), 1, ""},
      {"dp", absl::GetFlag(FLAGS_dp), 1, ""},
      {"micro-batches", absl::GetFlag(FLAGS_micro_batches), 0, " (0: one per pipeline stage)"},
      {"comm-timeout-s", absl::GetFlag(FLAGS_comm_timeout_s), 1, ""},
      {"limit", absl::GetFlag(FLAGS_limit), 0, " (0: all samples)"},
      {"port", absl::GetFlag(FLAGS_port), 0, " (0: any free port)"},
      {"max-waiting-requests", absl::GetFlag(FLAGS_max_waiting_requests), 1, ""},
  };
  for (const IntFlag& f : flags) {
    if (f.value < f.min) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", f.name, ": must be >= ", f.min, f.meaning, ", got ", f.value));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DType> KvDTypeFromFlags() {
  absl::StatusOr<DType> dtype = ParseFloatDType(absl::GetFlag(FLAGS_kv_dtype));
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-dtype: ", dtype.status().message()));
  }
  return dtype;
}

WorldLayout LayoutFromFlags() {
  return WorldLayout{absl::GetFlag(FLAGS_tp), absl::GetFlag(FLAGS_pp), absl::GetFlag(FLAGS_dp), 0};
}

absl::StatusOr<std::vector<int64_t>> StageLayersFromFlags() {
  std::vector<int64_t> layers;
  for (const std::string& s : absl::GetFlag(FLAGS_stage_layers)) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(s, &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--stage-layers: \"", s, "\" is not a number of layers"));
    }
    layers.push_back(n);
  }
  return layers;
}

std::vector<std::string> NormalizeFlagNames(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  out.reserve(args.size());
  bool value_expected = false;  // the previous argument was `--name` of a non-boolean flag
  for (const std::string& arg : args) {
    if (value_expected || arg.size() <= 2 || arg.compare(0, 2, "--") != 0) {
      out.push_back(arg);
      value_expected = false;
      continue;
    }
    std::string fixed = arg;
    const size_t end = std::min(fixed.find('='), fixed.size());
    for (size_t i = 2; i < end; ++i) {
      if (fixed[i] == '-') fixed[i] = '_';
    }
    const std::string name = fixed.substr(2, end - 2);
    GivenFlags().insert(name);
    if (end == fixed.size()) {  // `--name VALUE` unless the flag is boolean (or unknown)
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
      value_expected = flag != nullptr && !flag->IsOfType<bool>();
    }
    out.push_back(fixed);
  }
  return out;
}

}  // namespace tessera
