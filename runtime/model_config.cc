#include "runtime/model_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", what));
}

absl::StatusOr<int64_t> RequiredInt(const json& j, const std::string& source, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return FieldError(source, field, "is missing");
  if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
    return FieldError(source, field, absl::StrCat("must be a positive integer, got ", it->dump()));
  }
  return it->get<int64_t>();
}

absl::StatusOr<double> OptionalNumber(const json& j, const std::string& source, const char* field,
                                      double fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(source, field, "must be a number");
  return it->get<double>();
}

absl::StatusOr<bool> OptionalBool(const json& j, const std::string& source, const char* field,
                                  bool fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(source, field, "must be true or false");
  return it->get<bool>();
}

// eos_token_id: an integer or a list of integers (Llama-3.1).
absl::StatusOr<std::vector<int32_t>> TokenIdList(const json& value, const std::string& source,
                                                 const char* field) {
  std::vector<int32_t> ids;
  if (value.is_number_integer()) {
    ids.push_back(value.get<int32_t>());
  } else if (value.is_array()) {
    for (const json& v : value) {
      if (!v.is_number_integer()) return FieldError(source, field, "must hold integers");
      ids.push_back(v.get<int32_t>());
    }
  } else {
    return FieldError(source, field, "must be an integer or a list of integers");
  }
  return ids;
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const json& rs, const std::string& source,
                                             const std::string& field) {
  RopeScaling out;
  if (rs.is_null()) return out;
  if (!rs.is_object()) return FieldError(source, field, "must be an object or null");
  std::string type;
  if (rs.contains("rope_type")) {
    type = rs["rope_type"].is_string() ? rs["rope_type"].get<std::string>() : "";
  } else if (rs.contains("type")) {
    type = rs["type"].is_string() ? rs["type"].get<std::string>() : "";
  }
  auto number = [&](const char* key, double fallback) -> absl::StatusOr<double> {
    if (!rs.contains(key)) return fallback;
    if (!rs[key].is_number()) return FieldError(source, field + "." + key, "must be a number");
    return rs[key].get<double>();
  };
  if (type == "default") return out;
  if (type == "linear") {
    out.type = RopeScaling::Type::kLinear;
  } else if (type == "dynamic") {
    out.type = RopeScaling::Type::kDynamic;
  } else if (type == "llama3") {
    out.type = RopeScaling::Type::kLlama3;
    ASSIGN_OR_RETURN(out.low_freq_factor, number("low_freq_factor", 1.0));
    ASSIGN_OR_RETURN(out.high_freq_factor, number("high_freq_factor", 4.0));
    ASSIGN_OR_RETURN(double original, number("original_max_position_embeddings", 8192));
    out.original_max_position_embeddings = static_cast<int64_t>(original);
    if (!(out.high_freq_factor > out.low_freq_factor)) {
      return FieldError(source, field, "needs high_freq_factor > low_freq_factor");
    }
  } else {
    return FieldError(source, field + ".rope_type",
                      absl::StrCat("is \"", type,
                                   "\", which Tessera does not implement; supported rope_scaling "
                                   "types are linear, dynamic and llama3 (or null)"));
  }
  ASSIGN_OR_RETURN(out.factor, number("factor", 1.0));
  if (!(out.factor >= 1.0)) return FieldError(source, field + ".factor", "must be >= 1");
  return out;
}

// BOS and EOS ids must be tokens of the vocabulary; `source` is the file that set them.
absl::Status CheckSpecialTokens(const ModelConfig& c, const std::string& source) {
  for (int32_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return FieldError(source, "eos_token_id",
                        absl::StrCat("has id ", id, " outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size) {
    return FieldError(source, "bos_token_id",
                      absl::StrCat("is ", c.bos_token_id, ", outside the vocabulary [0, ",
                                   c.vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid JSON object"));
  }
  if (j.contains("quantization_config")) {
    return FieldError(source, "quantization_config",
                      "is present: quantized checkpoints (GPTQ, AWQ, FP8, ...) are not supported; "
                      "use the bf16/fp16/fp32 checkpoint");
  }
  bool is_llama = false;
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const json& a : j["architectures"]) is_llama |= a == "LlamaForCausalLM";
    if (!is_llama) {
      return FieldError(source, "architectures",
                        absl::StrCat("is ", j["architectures"].dump(),
                                     "; Tessera runs LlamaForCausalLM checkpoints only"));
    }
  }
  if (j.contains("model_type") && j["model_type"] != "llama") {
    return FieldError(source, "model_type",
                      absl::StrCat("is ", j["model_type"].dump(), "; expected \"llama\""));
  }
  if (!is_llama && !j.contains("model_type")) {
    return FieldError(source, "architectures", "is missing (expected [\"LlamaForCausalLM\"])");
  }
  ModelConfig c;
  ASSIGN_OR_RETURN(c.hidden_size, RequiredInt(j, source, "hidden_size"));
  ASSIGN_OR_RETURN(c.intermediate_size, RequiredInt(j, source, "intermediate_size"));
  ASSIGN_OR_RETURN(c.num_hidden_layers, RequiredInt(j, source, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_attention_heads, RequiredInt(j, source, "num_attention_heads"));
  ASSIGN_OR_RETURN(c.vocab_size, RequiredInt(j, source, "vocab_size"));
  ASSIGN_OR_RETURN(c.max_position_embeddings, RequiredInt(j, source, "max_position_embeddings"));
  c.num_key_value_heads = c.num_attention_heads;
  if (j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()) {
    ASSIGN_OR_RETURN(c.num_key_value_heads, RequiredInt(j, source, "num_key_value_heads"));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat("(", c.num_key_value_heads, ") must divide num_attention_heads (",
                                   c.num_attention_heads, ")"));
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    ASSIGN_OR_RETURN(c.head_dim, RequiredInt(j, source, "head_dim"));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return FieldError(source, "num_attention_heads",
                        "does not divide hidden_size and no head_dim is given");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) return FieldError(source, "head_dim", "must be even for rotary embeddings");
  ASSIGN_OR_RETURN(c.rms_norm_eps, OptionalNumber(j, source, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, OptionalBool(j, source, "tie_word_embeddings", false));
  ASSIGN_OR_RETURN(bool attention_bias, OptionalBool(j, source, "attention_bias", false));
  ASSIGN_OR_RETURN(bool mlp_bias, OptionalBool(j, source, "mlp_bias", false));
  if (attention_bias) return FieldError(source, "attention_bias", "is true; Tessera supports Llama without biases");
  if (mlp_bias) return FieldError(source, "mlp_bias", "is true; Tessera supports Llama without biases");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    return FieldError(source, "hidden_act",
                      absl::StrCat("is ", j["hidden_act"].dump(), "; Llama uses \"silu\""));
  }
  // Rotary parameters: the classic rope_theta + rope_scaling, or transformers' newer
  // rope_parameters object that carries both.
  ASSIGN_OR_RETURN(c.rope_theta, OptionalNumber(j, source, "rope_theta", 10000.0));
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(j["rope_scaling"], source, "rope_scaling"));
  } else if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const json& rp = j["rope_parameters"];
    ASSIGN_OR_RETURN(c.rope_theta, OptionalNumber(rp, source, "rope_theta", c.rope_theta));
    ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(rp, source, "rope_parameters"));
  }
  if (!(c.rope_theta > 0)) return FieldError(source, "rope_theta", "must be positive");
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) {
    c.bos_token_id = j["bos_token_id"].get<int32_t>();
  }
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    ASSIGN_OR_RETURN(c.eos_token_ids, TokenIdList(j["eos_token_id"], source, "eos_token_id"));
  } else {
    c.eos_token_ids = {2};
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  }
  RETURN_IF_ERROR(CheckSpecialTokens(c, source));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  ASSIGN_OR_RETURN(ModelConfig c, ParseModelConfig(text, path));
  const std::string gen_path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  if (std::filesystem::exists(gen_path)) {
    ASSIGN_OR_RETURN(std::string gen_text, ReadFile(gen_path));
    json g = json::parse(gen_text, nullptr, false);
    if (g.is_discarded() || !g.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(gen_path, ": not a valid JSON object"));
    }
    if (g.contains("bos_token_id") && g["bos_token_id"].is_number_integer()) {
      c.bos_token_id = g["bos_token_id"].get<int32_t>();
    }
    if (g.contains("eos_token_id") && !g["eos_token_id"].is_null()) {
      ASSIGN_OR_RETURN(c.eos_token_ids, TokenIdList(g["eos_token_id"], gen_path, "eos_token_id"));
    }
    RETURN_IF_ERROR(CheckSpecialTokens(c, gen_path));
  }
  return c;
}

}  // namespace tessera
