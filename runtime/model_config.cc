#include "runtime/model_config.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/file_io.h"
#include "runtime/json_fields.h"

namespace tessera {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", what));
}

constexpr int32_t kInt32Max = JsonFields::kInt32Max;

// A rope_scaling / rope_parameters object; `field` names it in messages. transformers requires
// `factor` for every scaling type and all four llama3 keys, so a missing one is refused rather
// than run unscaled or with guessed values.
absl::StatusOr<RopeScaling> ParseRopeScaling(const json& rs, const std::string& source,
                                             const std::string& field) {
  RopeScaling out;
  if (rs.is_null()) return out;
  if (!rs.is_object()) return FieldError(source, field, "must be an object or null");
  // Sub-fields are named "rope_scaling.factor" in messages.
  JsonFields f(rs, source);
  auto error = [&](const std::string& key, absl::string_view what) {
    return FieldError(source, field + "." + key, what);
  };
  const char* type_key = f.Has("rope_type") ? "rope_type" : "type";
  if (!f.Has(type_key)) {
    return error("rope_type", "is missing; use one of linear, dynamic, llama3, yarn or default");
  }
  if (!f.Raw(type_key).is_string()) {
    return error(type_key, absl::StrCat("must be a string, got ", f.Raw(type_key).dump()));
  }
  const std::string type = f.Raw(type_key).get<std::string>();
  auto missing = [&](const char* key) {
    return error(key, absl::StrCat("is missing; rope type \"", type, "\" needs it"));
  };
  auto number = [&](const char* key) -> absl::StatusOr<double> {
    if (!f.Has(key)) return missing(key);
    if (!f.Raw(key).is_number()) {
      return error(key, absl::StrCat("must be a number, got ", f.Raw(key).dump()));
    }
    return f.Raw(key).get<double>();
  };
  // An optional number; transformers reads a missing or zero beta_fast / beta_slow as the default
  // (`get("beta_fast") or 32`), so 0 keeps `fallback` there too.
  auto optional = [&](const char* key, double fallback) -> absl::StatusOr<double> {
    if (!f.Has(key)) return fallback;
    return number(key);
  };
  if (type == "default") return out;
  if (type == "linear") {
    out.type = RopeScaling::Type::kLinear;
  } else if (type == "dynamic") {
    out.type = RopeScaling::Type::kDynamic;
  } else if (type == "llama3") {
    out.type = RopeScaling::Type::kLlama3;
    ASSIGN_OR_RETURN(out.low_freq_factor, number("low_freq_factor"));
    ASSIGN_OR_RETURN(out.high_freq_factor, number("high_freq_factor"));
    constexpr char kOriginal[] = "original_max_position_embeddings";
    if (!f.Has(kOriginal)) return missing(kOriginal);
    absl::StatusOr<int64_t> original = JsonInteger(f.Raw(kOriginal), 1, kInt32Max);
    if (!original.ok()) return error(kOriginal, original.status().message());
    out.original_max_position_embeddings = *original;
    if (!(out.high_freq_factor > out.low_freq_factor)) {
      return FieldError(source, field, "needs high_freq_factor > low_freq_factor");
    }
  } else if (type == "yarn") {
    out.type = RopeScaling::Type::kYarn;
    out.original_max_position_embeddings = 0;  // ParseModelConfig: max_position_embeddings
    constexpr char kOriginal[] = "original_max_position_embeddings";
    if (f.Has(kOriginal)) {
      absl::StatusOr<int64_t> original = JsonInteger(f.Raw(kOriginal), 1, kInt32Max);
      if (!original.ok()) return error(kOriginal, original.status().message());
      out.original_max_position_embeddings = *original;
    }
    ASSIGN_OR_RETURN(out.attention_factor, optional("attention_factor", 0.0));
    if (out.attention_factor < 0) return error("attention_factor", "must be > 0");
    ASSIGN_OR_RETURN(out.beta_fast, optional("beta_fast", 32.0));
    ASSIGN_OR_RETURN(out.beta_slow, optional("beta_slow", 1.0));
    if (out.beta_fast == 0) out.beta_fast = 32;
    if (out.beta_slow == 0) out.beta_slow = 1;
    ASSIGN_OR_RETURN(out.mscale, optional("mscale", 0.0));
    ASSIGN_OR_RETURN(out.mscale_all_dim, optional("mscale_all_dim", 0.0));
    if (f.Has("truncate")) {
      if (!f.Raw("truncate").is_boolean()) {
        return error("truncate",
                     absl::StrCat("must be true or false, got ", f.Raw("truncate").dump()));
      }
      out.truncate = f.Raw("truncate").get<bool>();
    }
  } else {
    return FieldError(source, field + "." + type_key,
                      absl::StrCat("is \"", type,
                                   "\", which Tessera does not implement; supported rope_scaling "
                                   "types are linear, dynamic, llama3 and yarn (or null)"));
  }
  ASSIGN_OR_RETURN(out.factor, number("factor"));
  if (!(out.factor >= 1.0)) return error("factor", "must be >= 1");
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

// bos_token_id, eos_token_id (an id or a list) and pad_token_id of config.json or
// generation_config.json into `c`, each type- and range-checked; absent ones keep `c`'s value.
absl::Status ParseSpecialTokens(const JsonFields& f, ModelConfig& c) {
  ASSIGN_OR_RETURN(c.bos_token_id, f.Int32("bos_token_id", 0, kInt32Max, c.bos_token_id));
  if (f.Has("eos_token_id")) {
    ASSIGN_OR_RETURN(c.eos_token_ids, f.Int32OrList("eos_token_id", 0, kInt32Max));
  }
  // Tessera does not pad, but a pad id that is not an id at all is a broken file (-1: none).
  if (f.Has("pad_token_id")) {
    ASSIGN_OR_RETURN(std::vector<int32_t> pad, f.Int32OrList("pad_token_id", -1, kInt32Max));
    (void)pad;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid JSON object"));
  }
  const JsonFields f(j, source);
  if (f.Has("quantization_config")) {
    return FieldError(source, "quantization_config",
                      "is present: quantized checkpoints (GPTQ, AWQ, FP8, ...) are not supported; "
                      "use the bf16/fp16/fp32 checkpoint");
  }
  bool is_llama = false;
  if (f.Has("architectures")) {
    ASSIGN_OR_RETURN(std::vector<std::string> architectures, f.StringList("architectures"));
    for (const std::string& a : architectures) is_llama |= a == "LlamaForCausalLM";
    if (!is_llama) {
      return FieldError(source, "architectures",
                        absl::StrCat("is ", j["architectures"].dump(),
                                     "; Tessera runs LlamaForCausalLM checkpoints only"));
    }
  }
  if (f.Has("model_type") && f.Raw("model_type") != "llama") {
    return FieldError(source, "model_type",
                      absl::StrCat("is ", j["model_type"].dump(), "; expected \"llama\""));
  }
  if (!is_llama && !f.Has("model_type")) {
    return FieldError(source, "architectures", "is missing (expected [\"LlamaForCausalLM\"])");
  }
  ModelConfig c;
  c.source = source;
  ASSIGN_OR_RETURN(c.hidden_size, f.Int("hidden_size", 1, kInt32Max));
  ASSIGN_OR_RETURN(c.intermediate_size, f.Int("intermediate_size", 1, kInt32Max));
  ASSIGN_OR_RETURN(c.num_hidden_layers, f.Int("num_hidden_layers", 1, kInt32Max));
  ASSIGN_OR_RETURN(c.num_attention_heads, f.Int("num_attention_heads", 1, kInt32Max));
  ASSIGN_OR_RETURN(c.vocab_size, f.Int("vocab_size", 1, kInt32Max));
  ASSIGN_OR_RETURN(c.max_position_embeddings, f.Int("max_position_embeddings", 1, kInt32Max));
  ASSIGN_OR_RETURN(c.num_key_value_heads,
                   f.Int("num_key_value_heads", 1, kInt32Max, c.num_attention_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat("(", c.num_key_value_heads, ") must divide num_attention_heads (",
                                   c.num_attention_heads, ")"));
  }
  if (f.Has("head_dim")) {
    ASSIGN_OR_RETURN(c.head_dim, f.Int("head_dim", 1, kInt32Max));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return FieldError(source, "num_attention_heads",
                        "does not divide hidden_size and no head_dim is given");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) return FieldError(source, "head_dim", "must be even for rotary embeddings");
  if (f.Has("tessera_exit_layers")) {
    ASSIGN_OR_RETURN(c.exit_layers, f.Int32OrList("tessera_exit_layers", 1,
                                                  static_cast<int32_t>(c.num_hidden_layers - 1)));
    for (size_t i = 1; i < c.exit_layers.size(); ++i) {
      if (c.exit_layers[i] <= c.exit_layers[i - 1]) {
        return FieldError(source, "tessera_exit_layers", "must be strictly increasing");
      }
    }
  }
  ASSIGN_OR_RETURN(c.rms_norm_eps, f.Double("rms_norm_eps", 1e-6));
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return FieldError(source, "rms_norm_eps",
                      absl::StrCat("must be a positive number (e.g. 1e-5), got ", c.rms_norm_eps));
  }
  ASSIGN_OR_RETURN(c.tie_word_embeddings, f.Bool("tie_word_embeddings", false));
  ASSIGN_OR_RETURN(bool attention_bias, f.Bool("attention_bias", false));
  ASSIGN_OR_RETURN(bool mlp_bias, f.Bool("mlp_bias", false));
  if (attention_bias) return FieldError(source, "attention_bias", "is true; Tessera supports Llama without biases");
  if (mlp_bias) return FieldError(source, "mlp_bias", "is true; Tessera supports Llama without biases");
  // transformers maps "swish" to the same SiLU as "silu".
  ASSIGN_OR_RETURN(std::string act, f.String("hidden_act", "silu"));
  if (act != "silu" && act != "swish") {
    return FieldError(source, "hidden_act",
                      absl::StrCat("is \"", act,
                                   "\"; Llama uses \"silu\" (or its alias \"swish\")"));
  }
  // Rotary parameters: the classic rope_theta + rope_scaling, or transformers' newer
  // rope_parameters object that carries both.
  ASSIGN_OR_RETURN(c.rope_theta, f.Double("rope_theta", 10000.0));
  if (f.Has("rope_scaling")) {
    ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(j["rope_scaling"], source, "rope_scaling"));
  } else if (f.Has("rope_parameters")) {
    const json& rp = j["rope_parameters"];
    if (!rp.is_object()) return FieldError(source, "rope_parameters", "must be an object or null");
    ASSIGN_OR_RETURN(c.rope_theta, JsonFields(rp, source).Double("rope_theta", c.rope_theta));
    ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(rp, source, "rope_parameters"));
  }
  if (c.rope_scaling.type == RopeScaling::Type::kYarn &&
      c.rope_scaling.original_max_position_embeddings == 0) {
    c.rope_scaling.original_max_position_embeddings = c.max_position_embeddings;
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    return FieldError(source, "rope_theta", "must be positive");
  }
  c.eos_token_ids = {2};
  RETURN_IF_ERROR(ParseSpecialTokens(f, c));
  ASSIGN_OR_RETURN(c.torch_dtype, f.String("torch_dtype", ""));
  RETURN_IF_ERROR(CheckSpecialTokens(c, source));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  ASSIGN_OR_RETURN(ModelConfig c, ParseModelConfig(text, path));
  const std::string gen_path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  std::error_code ec;
  if (std::filesystem::exists(gen_path, ec)) {
    ASSIGN_OR_RETURN(std::string gen_text, ReadWholeFile(gen_path));
    json g = json::parse(gen_text, nullptr, false);
    if (g.is_discarded() || !g.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(gen_path, ": not a valid JSON object"));
    }
    RETURN_IF_ERROR(ParseSpecialTokens(JsonFields(g, gen_path), c));
    RETURN_IF_ERROR(CheckSpecialTokens(c, gen_path));
  }
  return c;
}

}  // namespace tessera
