#include "runtime/context_limit.h"

#include "absl/strings/str_cat.h"

namespace tessera {

const char* RopeScalingName(RopeScaling::Type type) {
  switch (type) {
    case RopeScaling::Type::kNone:
      return "null";
    case RopeScaling::Type::kLinear:
      return "linear";
    case RopeScaling::Type::kDynamic:
      return "dynamic";
    case RopeScaling::Type::kLlama3:
      return "llama3";
    case RopeScaling::Type::kYarn:
      return "yarn";
  }
  return "?";
}

bool RopeExtendsContext(const ModelConfig& config) {
  return config.rope_scaling.type != RopeScaling::Type::kNone;
}

absl::StatusOr<int64_t> ContextLimit(const ModelConfig& config, int64_t requested_max_seq_len) {
  const int64_t trained = config.max_position_embeddings;
  if (requested_max_seq_len < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_seq_len must be >= 0 (0: the model's context, max_position_embeddings=", trained,
        "), got ", requested_max_seq_len));
  }
  if (requested_max_seq_len == 0) return trained;
  if (requested_max_seq_len <= trained || RopeExtendsContext(config)) return requested_max_seq_len;
  return absl::InvalidArgumentError(absl::StrCat(
      "max_seq_len=", requested_max_seq_len,
      " (--max-seq-len / model.max_seq_len) exceeds max_position_embeddings=", trained,
      " and config.json has no rope_scaling (plain RoPE): the model was not trained past ", trained,
      " positions. Use max_seq_len <= ", trained,
      ", or add a rope_scaling that extends the context (dynamic, linear, llama3 or yarn, e.g. "
      "{\"rope_type\": \"dynamic\", \"factor\": 2.0}) to config.json"));
}

std::string ContextLimitHint(const ModelConfig& config, int64_t requested_max_seq_len,
                             int64_t needed) {
  const int64_t trained = config.max_position_embeddings;
  if (RopeExtendsContext(config)) {
    return absl::StrCat("; rope_scaling \"", RopeScalingName(config.rope_scaling.type),
                        "\" runs longer contexts: ", requested_max_seq_len > 0 ? "raise" : "set",
                        " --max-seq-len to at least ", needed,
                        " (model.max_seq_len in a run config)");
  }
  if (requested_max_seq_len > 0 && requested_max_seq_len < trained) {
    return absl::StrCat(
        "; raise --max-seq-len (model.max_seq_len in a run config), up to "
        "max_position_embeddings=",
        trained);
  }
  return absl::StrCat(
      "; config.json has no rope_scaling, so the model was not trained past "
      "max_position_embeddings=",
      trained, " positions");
}

}  // namespace tessera
