// ModelConfig: the Llama hyper-parameters of a Hugging Face checkpoint directory, read from
// config.json (and generation_config.json for BOS/EOS when present).
//
// Supported: LlamaForCausalLM / model_type "llama" as transformers defines it (Llama-2,
// CodeLlama, Llama-3/3.1): RMSNorm, rotary embeddings with rope_scaling types linear, dynamic,
// llama3 and yarn, grouped-query attention, SwiGLU (hidden_act "silu" or its alias "swish"), tied
// or untied embeddings, optional head_dim. How far past max_position_embeddings each rope_scaling
// type may run is decided by ContextLimit (runtime/context_limit.h).
// Everything else (another architecture, quantization_config, attention or MLP biases, another
// activation, another rope type) is refused with InvalidArgument naming the file and field, and
// so is a malformed value: every field is type-checked (a string where a number belongs is an
// error, not ignored), integers are range-checked before narrowing (dimensions and ids are int32;
// bos/eos/pad ids, in either file, never wrap), rms_norm_eps and rope_theta must be > 0, and a
// rope_scaling must carry its rope_type and factor (llama3: all four of its parameters).
#ifndef TESSERA_RUNTIME_MODEL_CONFIG_H_
#define TESSERA_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

struct RopeScaling {
  enum class Type { kNone, kLinear, kDynamic, kLlama3, kYarn };
  Type type = Type::kNone;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // llama3 and yarn (yarn: default max_position_embeddings).
  int64_t original_max_position_embeddings = 8192;
  // yarn only, with transformers' defaults. attention_factor 0: derived from factor, or from
  // mscale / mscale_all_dim when both are non-zero.
  double attention_factor = 0;
  double beta_fast = 32, beta_slow = 1;
  double mscale = 0, mscale_all_dim = 0;
  bool truncate = true;
};

struct ModelConfig {
  int64_t hidden_size = 0;        // dim
  int64_t intermediate_size = 0;  // hidden_dim of the MLP
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  int32_t bos_token_id = 1;
  std::vector<int32_t> eos_token_ids;  // generation stops on any of them
  std::string torch_dtype;             // informational ("bfloat16", ...)
  // Tessera's own key `tessera_exit_layers`: the depths (blocks run, in [1, layers - 1],
  // increasing) a checkpoint was trained to exit at through its final norm and LM head; empty
  // when absent. The early-exit method's default exits.
  std::vector<int32_t> exit_layers;
  // The config.json this was read from (ParseModelConfig's `source`): a method reads its own keys
  // there (Activation Beacon's beacon_*).
  std::string source;
};

// Parses `json_text` (the contents of config.json; `source` names it in messages).
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source);

// Reads DIR/config.json, then BOS/EOS overrides from DIR/generation_config.json if present.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_MODEL_CONFIG_H_
