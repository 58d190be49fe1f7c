#include "runtime/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/context_limit.h"
#include "runtime/shard_plan.h"

namespace tessera {
namespace {

std::string Gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GB", bytes / 1e9);
  return buf;
}

}  // namespace

const char* PlanVerdictName(PlanVerdict verdict) {
  switch (verdict) {
    case PlanVerdict::kFits:
      return "fits";
    case PlanVerdict::kContextDoesNotFit:
      return "context_does_not_fit";
    case PlanVerdict::kWeightsDoNotFit:
      return "does_not_fit";
  }
  return "?";
}

const char* ShortDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kF32:
      return "f32";
    default:
      return "?";
  }
}

bool RankMemory::SameNumbers(const RankMemory& o) const {
  return pp_rank == o.pp_rank && layer_begin == o.layer_begin && layer_end == o.layer_end &&
         heads == o.heads && kv_heads == o.kv_heads && ffn == o.ffn &&
         vocab_shard == o.vocab_shard && vocab_padding_rows == o.vocab_padding_rows &&
         weight_bytes == o.weight_bytes && kv_bytes_per_token == o.kv_bytes_per_token &&
         kv_capacity_tokens == o.kv_capacity_tokens && verdict == o.verdict;
}

std::string MemoryPlan::Summary() const {
  // The tightest rank names the problem.
  const RankMemory* worst = &ranks.front();
  for (const RankMemory& r : ranks) {
    const bool tighter = verdict == PlanVerdict::kWeightsDoNotFit
                             ? r.kv_space_bytes < worst->kv_space_bytes
                             : r.kv_capacity_tokens < worst->kv_capacity_tokens;
    if (tighter) worst = &r;
  }
  const std::string where = absl::StrCat("pp", worst->pp_rank, " tp", worst->tp_rank);
  switch (verdict) {
    case PlanVerdict::kFits:
      return absl::StrCat("fits: max context of ", max_context, " tokens fits ",
                          max_context_sequences,
                          max_context_sequences == 1 ? " sequence" : " sequences",
                          " per replica (KV cache for ", kv_capacity_tokens, " tokens)");
    case PlanVerdict::kContextDoesNotFit:
      return absl::StrCat("weights fit, but the KV cache holds only ", kv_capacity_tokens,
                          " tokens (on ", where, "), less than one sequence of max context ",
                          max_context, "; add ranks (--tp, --pp) or lower --max-seq-len");
    case PlanVerdict::kWeightsDoNotFit:
      return absl::StrCat("does not fit: on ", where, " weights ", Gb(worst->weight_bytes),
                          " + workspace ", Gb(options.workspace_bytes), " exceed the ",
                          Gb(usable_bytes), " usable (short by ", Gb(-worst->kv_space_bytes),
                          "); add ranks (--tp, --pp) or use a device with more memory");
  }
  return "";
}

absl::StatusOr<MemoryPlan> MakeMemoryPlan(const ModelConfig& c, const WorldLayout& layout,
                                          const MemoryPlanOptions& options) {
  if (options.device_memory_bytes == 0) {
    return absl::InvalidArgumentError("--device-memory must be positive (e.g. 80GiB)");
  }
  if (!(options.memory_utilization > 0.0 && options.memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory-utilization must be in (0, 1], got ", options.memory_utilization));
  }
  for (DType d : {options.weight_dtype, options.kv_dtype}) {
    if (d != DType::kBF16 && d != DType::kF16 && d != DType::kF32) {
      return absl::InvalidArgumentError("weight and KV dtypes must be bf16, f16 or f32");
    }
  }
  if (options.max_context < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-seq-len must be >= 0, got ", options.max_context));
  }
  if (layout.tp < 1 || layout.pp < 1 || layout.dp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp, --pp and --dp must be >= 1, got tp=", layout.tp, " pp=", layout.pp,
                     " dp=", layout.dp));
  }

  MemoryPlan plan;
  plan.layout = layout;
  plan.layout.rank = 0;
  plan.options = options;
  ASSIGN_OR_RETURN(plan.max_context, ContextLimit(c, options.max_context));
  plan.usable_bytes = static_cast<uint64_t>(
      std::floor(static_cast<double>(options.device_memory_bytes) * options.memory_utilization));

  const uint64_t h = c.hidden_size, hd = c.head_dim;
  const uint64_t layer_params = 2 * h + h * c.num_attention_heads * hd +
                                2 * h * c.num_key_value_heads * hd +
                                c.num_attention_heads * hd * h + 3 * h * c.intermediate_size;
  plan.model_parameters = c.num_hidden_layers * layer_params + h +
                          (c.tie_word_embeddings ? 1 : 2) * static_cast<uint64_t>(c.vocab_size) * h;

  const uint64_t w = DTypeSize(options.weight_dtype), kv = DTypeSize(options.kv_dtype);
  for (int pp_rank = 0; pp_rank < layout.pp; ++pp_rank) {
    for (int tp_rank = 0; tp_rank < layout.tp; ++tp_rank) {
      WorldLayout at = plan.layout;
      at.rank = pp_rank * layout.tp + tp_rank;  // dp replica 0
      ASSIGN_OR_RETURN(ShardPlan s, MakeShardPlan(c, at, options.stage_layers));
      RankMemory r;
      r.pp_rank = pp_rank;
      r.tp_rank = tp_rank;
      r.layer_begin = s.layer_begin;
      r.layer_end = s.layer_end;
      r.heads = s.heads;
      r.kv_heads = s.kv_heads;
      r.ffn = s.ffn;
      r.vocab_shard = s.vocab_shard;
      r.vocab_padding_rows = s.vocab_shard - s.vocab_rows;
      const uint64_t vocab_shard_bytes = static_cast<uint64_t>(s.vocab_shard) * h * w;
      // The embedding lives on the first stage; with tied embeddings the last stage needs it too
      // (as its LM head), one copy when both are the same rank.
      if (s.first_stage()) r.embedding_bytes = vocab_shard_bytes;
      if (s.last_stage() || HeadOnStage(options.model, s)) {
        r.final_norm_bytes = h * w;
        if (!(c.tie_word_embeddings && s.first_stage())) r.lm_head_bytes = vocab_shard_bytes;
      }
      r.method_bytes = ExtraWeightBytes(options.model, c, s, options.weight_dtype);
      const uint64_t q = s.heads * hd, kvd = s.kv_heads * hd, f = s.ffn;
      const uint64_t per_layer = 2 * h          // input and post-attention RMSNorm
                                 + q * h        // q_proj rows
                                 + 2 * kvd * h  // k_proj, v_proj rows
                                 + h * q        // o_proj columns
                                 + 2 * f * h    // gate_proj, up_proj rows
                                 + h * f;       // down_proj columns
      r.layer_bytes = static_cast<uint64_t>(s.layers()) * per_layer * w;
      r.weight_bytes = r.embedding_bytes + r.layer_bytes + r.final_norm_bytes + r.lm_head_bytes +
                       r.method_bytes;
      r.kv_bytes_per_token = static_cast<uint64_t>(s.layers()) * kvd * 2 * kv;
      r.kv_space_bytes = static_cast<int64_t>(plan.usable_bytes) -
                         static_cast<int64_t>(r.weight_bytes) -
                         static_cast<int64_t>(options.workspace_bytes);
      r.kv_capacity_tokens =
          r.kv_space_bytes > 0 ? r.kv_space_bytes / static_cast<int64_t>(r.kv_bytes_per_token) : 0;
      r.max_context_sequences = r.kv_capacity_tokens / plan.max_context;
      r.verdict = r.kv_space_bytes < 0          ? PlanVerdict::kWeightsDoNotFit
                  : r.max_context_sequences < 1 ? PlanVerdict::kContextDoesNotFit
                                                : PlanVerdict::kFits;
      plan.ranks.push_back(r);
    }
  }
  plan.kv_capacity_tokens = std::numeric_limits<int64_t>::max();
  for (const RankMemory& r : plan.ranks) {
    plan.kv_capacity_tokens = std::min(plan.kv_capacity_tokens, r.kv_capacity_tokens);
    plan.verdict = std::max(plan.verdict, r.verdict);  // the enum is ordered by severity
  }
  plan.max_context_sequences = plan.kv_capacity_tokens / plan.max_context;
  return plan;
}

absl::StatusOr<uint64_t> ParseByteSize(const std::string& text) {
  const std::string s(absl::StripAsciiWhitespace(text));
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  const std::string number = s.substr(0, i);
  const std::string unit =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(absl::string_view(s).substr(i)));
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a memory size: ", why,
                                                   "; write e.g. 80GiB, 80GB or 81920MiB"));
  };
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value)) return bad("no number");
  struct Unit {
    const char* name;
    double bytes;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"b", 1},
      {"kb", 1e3},
      {"mb", 1e6},
      {"gb", 1e9},
      {"tb", 1e12},
      {"kib", 1024.0},
      {"mib", 1048576.0},
      {"gib", 1073741824.0},
      {"tib", 1099511627776.0},
  };
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    const double bytes = std::floor(value * u.bytes);
    if (!(bytes >= 1)) return bad("it must be positive");
    if (bytes > 1e18) return bad("it is too large");
    return static_cast<uint64_t>(bytes);
  }
  if (unit == "k" || unit == "m" || unit == "g" || unit == "t") {
    const std::string upper = absl::AsciiStrToUpper(unit);
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is ambiguous: write ", number,
                                                   upper, "iB (1024-based, as nvidia-smi) or ",
                                                   number, upper, "B (1000-based)"));
  }
  return bad(absl::StrCat("unknown unit \"", unit, "\""));
}

absl::StatusOr<DType> ParseFloatDType(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "f16" || n == "fp16" || n == "float16" || n == "half") return DType::kF16;
  if (n == "f32" || n == "fp32" || n == "float32" || n == "float") return DType::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("\"", name, "\" is not a supported dtype; use bf16, f16 or f32"));
}

}  // namespace tessera
