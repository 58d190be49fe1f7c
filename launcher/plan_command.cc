// `tessera plan`: the memory plan of a model on a layout, from config.json alone.
//
// Runs in one process without MPI and without weights, so a 70B layout can be checked on a
// laptop before a cluster job is queued. The numbers come from runtime/memory_plan.h.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "nlohmann/json.hpp"
#include "runtime/memory_plan.h"
#include "runtime/model_config.h"

namespace tessera {
namespace {

using nlohmann::json;

std::string Fixed(double value, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

// 1413951 -> "1,413,951".
std::string Grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

// {0,1,2,3,5} -> "0-3,5".
std::string Ranges(const std::vector<int>& v) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    parts.push_back(j == i ? std::to_string(v[i]) : absl::StrCat(v[i], "-", v[j]));
    i = j + 1;
  }
  return absl::StrJoin(parts, ",");
}

// --model as a directory (DIR/config.json, plus generation_config.json) or a config.json file.
absl::StatusOr<ModelConfig> LoadConfigForPlan(const std::string& model, std::string* source) {
  namespace fs = std::filesystem;
  if (model.empty()) {
    return absl::InvalidArgumentError(
        "--model is required: a model directory or its config.json (e.g. "
        "--model configs/models/llama-2-70b)");
  }
  std::error_code ec;
  if (fs::is_directory(model, ec)) {
    *source = (fs::path(model) / "config.json").string();
    auto config = LoadModelConfig(model);
    if (!config.ok()) {
      return absl::Status(config.status().code(),
                          absl::StrCat("--model: ", config.status().message()));
    }
    return config;
  }
  if (!fs::is_regular_file(model, ec)) {
    return absl::NotFoundError(
        absl::StrCat("--model: \"", model,
                     "\" is neither a directory nor a file (give a model directory or "
                     "its config.json)"));
  }
  *source = model;
  std::ifstream in(model, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat("--model: cannot read ", model));
  auto config = ParseModelConfig(text.str(), model);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat("--model: ", config.status().message()));
  }
  return config;
}

struct RowClass {
  RankMemory numbers;
  std::vector<int> tp_ranks;
};

std::vector<RowClass> GroupRanks(const MemoryPlan& plan) {
  std::vector<RowClass> rows;
  for (const RankMemory& r : plan.ranks) {
    bool placed = false;
    for (RowClass& row : rows) {
      if (row.numbers.SameNumbers(r)) {
        row.tp_ranks.push_back(r.tp_rank);
        placed = true;
        break;
      }
    }
    if (!placed) rows.push_back({r, {r.tp_rank}});
  }
  return rows;
}

std::string RowVerdict(const RankMemory& r, int64_t max_context) {
  switch (r.verdict) {
    case PlanVerdict::kFits:
      return absl::StrCat("fits: ", Grouped(r.max_context_sequences), " x ", max_context,
                          "-token context");
    case PlanVerdict::kContextDoesNotFit:
      return absl::StrCat("context does not fit: ", Grouped(r.kv_capacity_tokens), " < ",
                          max_context, " tokens");
    case PlanVerdict::kWeightsDoNotFit:
      return absl::StrCat("does not fit: short by ", Fixed(-r.kv_space_bytes / 1e9), " GB");
  }
  return "";
}

void PrintTable(const MemoryPlan& plan, const ModelConfig& c, const std::string& source,
                const std::string& dtype_note) {
  const WorldLayout& l = plan.layout;
  std::printf("model    %s\n", source.c_str());
  std::printf(
      "         %s B parameters: %lld layers, hidden %lld, %lld heads / %lld KV heads x %lld, "
      "ffn %lld, vocab %lld\n",
      Fixed(plan.model_parameters / 1e9).c_str(), static_cast<long long>(c.num_hidden_layers),
      static_cast<long long>(c.hidden_size), static_cast<long long>(c.num_attention_heads),
      static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.head_dim),
      static_cast<long long>(c.intermediate_size), static_cast<long long>(c.vocab_size));
  std::printf("layout   tp=%d x pp=%d x dp=%d = %d ranks\n", l.tp, l.pp, l.dp, l.world_size());
  std::printf("dtypes   weights %s%s, KV cache %s\n", ShortDTypeName(plan.options.weight_dtype),
              dtype_note.c_str(), ShortDTypeName(plan.options.kv_dtype));
  std::printf(
      "memory   %s GiB per device x %s = %s GB usable; workspace %s GB; max context %lld "
      "tokens\n\n",
      Fixed(plan.options.device_memory_bytes / static_cast<double>(kGiB)).c_str(),
      Fixed(plan.options.memory_utilization).c_str(), Fixed(plan.usable_bytes / 1e9).c_str(),
      Fixed(plan.options.workspace_bytes / 1e9).c_str(), static_cast<long long>(plan.max_context));

  std::vector<std::vector<std::string>> cells = {{"pp", "tp ranks", "layers", "weights GB",
                                                  "KV KiB/token", "KV space GB",
                                                  "KV capacity tokens", "verdict"}};
  for (const RowClass& row : GroupRanks(plan)) {
    const RankMemory& r = row.numbers;
    cells.push_back({std::to_string(r.pp_rank), Ranges(row.tp_ranks),
                     absl::StrCat(r.layer_begin, "-", r.layer_end - 1), Fixed(r.weight_bytes / 1e9),
                     Fixed(r.kv_bytes_per_token / 1024.0), Fixed(r.kv_space_bytes / 1e9),
                     Grouped(r.kv_capacity_tokens), RowVerdict(r, plan.max_context)});
  }
  std::vector<size_t> width(cells[0].size(), 0);
  for (const auto& line : cells) {
    for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  }
  for (const auto& line : cells) {
    std::string out;
    for (size_t i = 0; i < line.size(); ++i) {
      const std::string pad(width[i] - line[i].size(), ' ');
      const bool left = i == 1 || i == 2 || i + 1 == line.size();  // text columns
      out += left ? line[i] + (i + 1 == line.size() ? "" : pad) : pad + line[i];
      if (i + 1 < line.size()) out += "  ";
    }
    std::printf("%s\n", out.c_str());
  }
  std::printf("\n%s\n", plan.Summary().c_str());
  if (l.dp > 1 && plan.verdict == PlanVerdict::kFits) {
    std::printf("%d replicas: %s sequences of %lld tokens in all\n", l.dp,
                Grouped(plan.max_context_sequences * l.dp).c_str(),
                static_cast<long long>(plan.max_context));
  }
  for (const RankMemory& r : plan.ranks) {
    if (r.vocab_padding_rows > 0) {
      std::printf(
          "note: vocab_size %lld is padded to %lld rows per rank (tp=%d); the last rank "
          "holds %lld padding rows\n",
          static_cast<long long>(c.vocab_size), static_cast<long long>(r.vocab_shard), l.tp,
          static_cast<long long>(r.vocab_padding_rows));
      break;
    }
  }
}

json PlanJson(const MemoryPlan& plan, const ModelConfig& c, const std::string& source) {
  const WorldLayout& l = plan.layout;
  json j;
  j["model"] = {{"config", source},
                {"parameters", plan.model_parameters},
                {"hidden_size", c.hidden_size},
                {"num_hidden_layers", c.num_hidden_layers},
                {"num_attention_heads", c.num_attention_heads},
                {"num_key_value_heads", c.num_key_value_heads},
                {"head_dim", c.head_dim},
                {"intermediate_size", c.intermediate_size},
                {"vocab_size", c.vocab_size},
                {"max_position_embeddings", c.max_position_embeddings},
                {"torch_dtype", c.torch_dtype}};
  j["layout"] = {{"tp", l.tp}, {"pp", l.pp}, {"dp", l.dp}, {"world_size", l.world_size()}};
  j["weight_dtype"] = ShortDTypeName(plan.options.weight_dtype);
  j["kv_dtype"] = ShortDTypeName(plan.options.kv_dtype);
  j["device_memory_bytes"] = plan.options.device_memory_bytes;
  j["memory_utilization"] = plan.options.memory_utilization;
  j["usable_bytes"] = plan.usable_bytes;
  j["workspace_bytes"] = plan.options.workspace_bytes;
  j["max_context"] = plan.max_context;
  json rows = json::array();
  for (const RowClass& row : GroupRanks(plan)) {
    const RankMemory& r = row.numbers;
    rows.push_back({{"pp_rank", r.pp_rank},
                    {"tp_ranks", row.tp_ranks},
                    {"layer_begin", r.layer_begin},
                    {"layer_end", r.layer_end},
                    {"heads", r.heads},
                    {"kv_heads", r.kv_heads},
                    {"ffn", r.ffn},
                    {"vocab_shard", r.vocab_shard},
                    {"vocab_padding_rows", r.vocab_padding_rows},
                    {"embedding_bytes", r.embedding_bytes},
                    {"layer_bytes", r.layer_bytes},
                    {"final_norm_bytes", r.final_norm_bytes},
                    {"lm_head_bytes", r.lm_head_bytes},
                    {"weight_bytes", r.weight_bytes},
                    {"weight_gb", r.weight_bytes / 1e9},
                    {"kv_bytes_per_token", r.kv_bytes_per_token},
                    {"kv_kib_per_token", r.kv_bytes_per_token / 1024.0},
                    {"kv_space_bytes", r.kv_space_bytes},
                    {"kv_capacity_tokens", r.kv_capacity_tokens},
                    {"max_context_sequences", r.max_context_sequences},
                    {"verdict", PlanVerdictName(r.verdict)}});
  }
  j["ranks"] = rows;
  j["replica"] = {{"kv_capacity_tokens", plan.kv_capacity_tokens},
                  {"max_context_sequences", plan.max_context_sequences},
                  {"verdict", PlanVerdictName(plan.verdict)},
                  {"fits", plan.verdict == PlanVerdict::kFits},
                  {"summary", plan.Summary()}};
  j["total_max_context_sequences"] = plan.max_context_sequences * l.dp;
  return j;
}

}  // namespace

absl::Status RunPlan() {
  std::string source;
  ASSIGN_OR_RETURN(ModelConfig config, LoadConfigForPlan(absl::GetFlag(FLAGS_model), &source));

  MemoryPlanOptions options;
  const std::string memory = absl::GetFlag(FLAGS_device_memory);
  if (memory.empty()) {
    return absl::InvalidArgumentError(
        "--device-memory is required: the memory of one GPU, e.g. 80GiB (H100/A100 80GB), "
        "40GiB, 141GB (H200)");
  }
  auto bytes = ParseByteSize(memory);
  if (!bytes.ok())
    return absl::InvalidArgumentError(absl::StrCat("--device-memory: ", bytes.status().message()));
  options.device_memory_bytes = *bytes;
  auto workspace = ParseByteSize(absl::GetFlag(FLAGS_workspace));
  if (!workspace.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--workspace: ", workspace.status().message()));
  }
  options.workspace_bytes = *workspace;
  options.memory_utilization = absl::GetFlag(FLAGS_memory_utilization);
  if (!(options.memory_utilization > 0.0 && options.memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory-utilization must be in (0, 1], got ", options.memory_utilization));
  }

  std::string dtype_note;
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (!dtype.empty()) {
    auto d = ParseFloatDType(dtype);
    if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat("--dtype: ", d.status().message()));
    options.weight_dtype = *d;
    if (!config.torch_dtype.empty()) {
      dtype_note = absl::StrCat(" (--dtype; config.json says ", config.torch_dtype, ")");
    }
  } else if (config.torch_dtype.empty()) {
    options.weight_dtype = DType::kBF16;
    dtype_note = " (config.json has no torch_dtype; set --dtype to change)";
  } else {
    auto d = ParseFloatDType(config.torch_dtype);
    if (!d.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field \"torch_dtype\" is \"", config.torch_dtype,
                       "\"; give the dtype the weights will have with --dtype bf16|f16|f32"));
    }
    options.weight_dtype = *d;
    dtype_note = absl::StrCat(" (config.json torch_dtype ", config.torch_dtype, ")");
  }
  // The cache generate, eval and bench allocate with the same --kv-dtype (default f32, on every
  // backend): runtime/kv_cache.h.
  ASSIGN_OR_RETURN(options.kv_dtype, KvDTypeFromFlags());
  options.max_context = absl::GetFlag(FLAGS_max_seq_len);
  if (options.max_context < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-seq-len must be >= 0 (0: the model's context), got ", options.max_context));
  }
  ASSIGN_OR_RETURN(options.stage_layers, StageLayersFromFlags());

  const WorldLayout layout = LayoutFromFlags();
  auto plan = MakeMemoryPlan(config, layout, options);
  if (!plan.ok()) {
    return absl::Status(plan.status().code(),
                        absl::StrCat("layout tp=", layout.tp, " x pp=", layout.pp, " for ", source,
                                     ": ", plan.status().message()));
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", PlanJson(*plan, config, source).dump(2).c_str());
  } else {
    PrintTable(*plan, config, source, dtype_note);
  }
  return absl::OkStatus();
}

}  // namespace tessera
