#include "launcher/command_help.h"

#include <algorithm>
#include <cstdint>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace tessera {
namespace {

struct Command {
  const char* name;
  const char* usage;    // after "tessera <name> "
  const char* summary;  // one paragraph
  std::vector<std::string> flags;
};

// The flags every command that loads a model takes for its layout and run.
#define TESSERA_JOB_FLAGS \
  "tp", "pp", "dp", "comm_timeout_s", "threads", "cuda_graphs", "check_rank_agreement"

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"generate",
       "--model DIR (--prompt TEXT | --prompts FILE.jsonl) [flags]",
       "Prompts to completions: --prompt streams one completion to stdout; --prompts writes one "
       "JSON line per prompt (text, token ids, finish reason, timings) in input order.",
       {"model",     "backend",     "config",       "method",         "set",
        "prompt",    "prompts",     "output",       "max_new_tokens", "temperature",
        "top_k",     "top_p",       "top_p_before_temperature",     "seed",
        "stop",      "ignore_eos",
        "max_batch", "max_seq_len", "kv_dtype",     "stage_layers",   "micro_batches",
        TESSERA_JOB_FLAGS}},
      {"eval",
       "--config RUN.textproto [--set path=value ...] [flags]",
       "An evaluation task of the run config (perplexity, passkey, multiple choice, code "
       "generation, generation) over JSONL data; prints the results table and writes "
       "results_*.json and samples_*.jsonl. The layout comes from the run config or --tp, --pp, "
       "--dp.",
       {"config", "method", "set", "model", "backend", "kv_dtype", "max_batch", "seed", "limit",
        "output_dir", TESSERA_JOB_FLAGS}},
      {"serve",
       "--model DIR [--host 127.0.0.1 --port 8000] [flags]",
       "An OpenAI-compatible HTTP server: /v1/completions (echo, prompt and token "
       "log-probabilities, streaming), /v1/chat/completions, /v1/models, /tokenize, /detokenize, "
       "/tokenizer_info, /health, /metrics. Each replica's rank 0 serves (with --dp D, on --port "
       "+ replica); every rank of the replica runs its waves of requests, which new generation "
       "requests join as slots free. SIGTERM or SIGINT stops every rank.",
       {"model", "backend", "config", "method", "set", "host", "port", "served_model_name",
        "chat_template", "max_waiting_requests", "max_batch", "max_seq_len", "kv_dtype",
        "stage_layers", "micro_batches", TESSERA_JOB_FLAGS}},
      {"bench",
       "--model DIR [flags]",
       "Prefill and decode throughput and latency, weight bytes, peak memory and this machine's "
       "memory bandwidth, as one JSON object.",
       {"model", "backend", "kv_dtype", "config", "method", "set", "prompt_tokens",
        "decode_tokens", "batch", "max_seq_len", "stage_layers", TESSERA_JOB_FLAGS}},
      {"calibrate",
       "--model DIR --method SPARSE.textproto --data FILE.jsonl [flags]",
       "Top-theta thresholds per (layer, head, row length) from calibration texts, for the "
       "method.sparse_attention settings (kind, k, layer_k, placement; Top-k with "
       "SDC_OFFLINE_CALIBRATED: its missing-mass terms), written as th.txt / sdc.txt and "
       "calibration.json into --output-dir (default: the settings' calibration_dir). Heads are "
       "recorded on their tensor-parallel rank, layers on their stage, samples on their replica.",
       {"model", "backend", "kv_dtype", "config", "method", "set", "data", "limit", "max_batch",
        "max_seq_len", "seed", "calib_add_sigma", "calib_tac", "calib_sample_frac", "output_dir",
        "stage_layers", TESSERA_JOB_FLAGS}},
      {"plan",
       "--model DIR|config.json --device-memory 80GiB [flags]",
       "Per-rank weight bytes, KV bytes per token and KV capacity of a model on a layout, from "
       "config.json alone: no weights are read, one process, no MPI.",
       {"model", "device_memory", "tp", "pp", "stage_layers", "dtype", "kv_dtype", "max_seq_len",
        "memory_utilization", "workspace", "json"}},
  };
  return *commands;
}

#undef TESSERA_JOB_FLAGS

const Command* Find(const std::string& name) {
  for (const Command& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::string TypeName(const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<bool>()) return "bool";
  if (flag.IsOfType<int32_t>()) return "int32";
  if (flag.IsOfType<int64_t>()) return "int64";
  if (flag.IsOfType<uint64_t>()) return "uint64";
  if (flag.IsOfType<float>() || flag.IsOfType<double>()) return "float";
  if (flag.IsOfType<std::string>()) return "string";
  if (flag.IsOfType<std::vector<std::string>>()) return "list";
  return "value";
}

// `text` broken at spaces into lines of at most `width` characters (a longer word stays whole),
// each starting with `indent`, each ending with a newline.
std::string Wrap(absl::string_view text, const std::string& indent, size_t width = 100) {
  std::string out, line = indent;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (line.size() > indent.size() && line.size() + 1 + word.size() > width) {
      absl::StrAppend(&out, line, "\n");
      line = indent;
    }
    absl::StrAppend(&line, line.size() > indent.size() ? " " : "", word);
  }
  return absl::StrCat(out, line, "\n");
}

std::string Dashed(const std::string& name) { return absl::StrReplaceAll(name, {{"_", "-"}}); }

std::string FlagEntry(const std::string& name) {
  if (name == "set") {
    return absl::StrCat(
        "  --set=<path=value>  (repeatable; default: none)\n",
        Wrap("Set one run-config field, e.g. layout.tp=2, method.homer.max_chunk_len=4096 or "
             "method.sparse_attention.kind=TOP_K; applied after --config and --method, in "
             "order (without --config only method.* fields)",
             "      "));
  }
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr) return absl::StrCat("  --", Dashed(name), "  (not defined)\n");
  const std::string type = TypeName(*flag);
  std::string value = flag->DefaultValue();
  if (type == "string" || type == "list") value = absl::StrCat("\"", value, "\"");
  return absl::StrCat("  --", Dashed(name), type == "bool" ? "[=<bool>]" : "=<" + type + ">",
                      "  (default: ", value, ")\n", Wrap(flag->Help(), "      "));
}

}  // namespace

std::vector<std::string> CommandNames() {
  std::vector<std::string> names;
  for (const Command& c : Commands()) names.push_back(c.name);
  return names;
}

bool IsCommand(const std::string& command) { return Find(command) != nullptr; }

absl::Status CheckCommandFlags(const std::string& command, const std::vector<std::string>& given) {
  const Command* c = Find(command);
  if (c == nullptr) return absl::OkStatus();
  for (const std::string& name : given) {
    const bool listed =
        std::find(c->flags.begin(), c->flags.end(), name) != c->flags.end() ||
        (name.rfind("no", 0) == 0 &&
         std::find(c->flags.begin(), c->flags.end(), name.substr(2)) != c->flags.end());
    if (listed || name == "help") continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "--", absl::StrReplaceAll(name, {{"_", "-"}}), " is not a flag of `tessera ", command,
        "` (it would have no effect); `tessera ", command, " --help` lists its flags"));
  }
  return absl::OkStatus();
}

std::vector<std::string> CommandFlags(const std::string& command) {
  const Command* c = Find(command);
  return c == nullptr ? std::vector<std::string>{} : c->flags;
}

std::string CommandHelp(const std::string& command) {
  const Command* c = Find(command);
  if (c == nullptr) return "";
  std::string help = absl::StrCat("usage: tessera ", c->name, " ", c->usage, "\n\n",
                                  Wrap(c->summary, ""), "\nflags:\n");
  for (const std::string& flag : c->flags) help += FlagEntry(flag);
  help += "  --help\n      Print this help and exit\n";
  return help;
}

bool WantsHelp(const std::vector<std::string>& args) {
  bool value_expected = false;  // the argument before was `--name` of a flag that takes a value
  for (const std::string& arg : args) {
    if (value_expected) {
      value_expected = false;
      continue;
    }
    if (arg == "--help" || arg == "-h") return true;
    if (arg == "--") return false;  // the rest are not flags
    if (arg.size() <= 2 || arg.compare(0, 2, "--") != 0 || arg.find('=') != std::string::npos) {
      continue;
    }
    const std::string name = absl::StrReplaceAll(arg.substr(2), {{"-", "_"}});
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    value_expected = name == "set" || (flag != nullptr && !flag->IsOfType<bool>());
  }
  return false;
}

}  // namespace tessera
