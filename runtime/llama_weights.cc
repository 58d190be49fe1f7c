#include "runtime/llama_weights.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

// `hint` names the config fields the expected shape comes from.
absl::StatusOr<TensorView> Get(const Checkpoint& ckpt, const std::string& name,
                               std::vector<int64_t> expected, absl::string_view hint,
                               size_t* bytes) {
  ASSIGN_OR_RETURN(const TensorEntry* t, ckpt.Find(name));
  if (t->dtype == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor \"", name,
                                                   "\" has dtype I32; weights must be F32, F16 or BF16"));
  }
  if (t->shape != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        t->file, ": tensor \"", name, "\" has shape ", ShapeString(t->shape), " but config.json (",
        hint, ") implies ", ShapeString(expected), "; the config and the weights disagree"));
  }
  *bytes += t->bytes;
  return t->view();
}

}  // namespace

absl::StatusOr<LlamaWeights> LoadLlamaWeights(const Checkpoint& ckpt, const ModelConfig& c) {
  LlamaWeights w;
  const int64_t dim = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim,
                kv_dim = c.num_key_value_heads * c.head_dim, ffn = c.intermediate_size;
  ASSIGN_OR_RETURN(w.embed, Get(ckpt, "model.embed_tokens.weight", {c.vocab_size, dim},
                                "vocab_size, hidden_size", &w.bytes));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights l;
    ASSIGN_OR_RETURN(l.attn_norm, Get(ckpt, p + "input_layernorm.weight", {dim}, "hidden_size", &w.bytes));
    ASSIGN_OR_RETURN(l.wq, Get(ckpt, p + "self_attn.q_proj.weight", {q_dim, dim},
                               "num_attention_heads * head_dim, hidden_size", &w.bytes));
    ASSIGN_OR_RETURN(l.wk, Get(ckpt, p + "self_attn.k_proj.weight", {kv_dim, dim},
                               "num_key_value_heads * head_dim, hidden_size", &w.bytes));
    ASSIGN_OR_RETURN(l.wv, Get(ckpt, p + "self_attn.v_proj.weight", {kv_dim, dim},
                               "num_key_value_heads * head_dim, hidden_size", &w.bytes));
    ASSIGN_OR_RETURN(l.wo, Get(ckpt, p + "self_attn.o_proj.weight", {dim, q_dim},
                               "hidden_size, num_attention_heads * head_dim", &w.bytes));
    ASSIGN_OR_RETURN(l.mlp_norm, Get(ckpt, p + "post_attention_layernorm.weight", {dim},
                                     "hidden_size", &w.bytes));
    ASSIGN_OR_RETURN(l.w_gate, Get(ckpt, p + "mlp.gate_proj.weight", {ffn, dim},
                                   "intermediate_size, hidden_size", &w.bytes));
    ASSIGN_OR_RETURN(l.w_up, Get(ckpt, p + "mlp.up_proj.weight", {ffn, dim},
                                 "intermediate_size, hidden_size", &w.bytes));
    ASSIGN_OR_RETURN(l.w_down, Get(ckpt, p + "mlp.down_proj.weight", {dim, ffn},
                                   "hidden_size, intermediate_size", &w.bytes));
    w.layers.push_back(l);
  }
  ASSIGN_OR_RETURN(w.final_norm, Get(ckpt, "model.norm.weight", {dim}, "hidden_size", &w.bytes));
  if (ckpt.Contains("lm_head.weight")) {
    ASSIGN_OR_RETURN(w.lm_head, Get(ckpt, "lm_head.weight", {c.vocab_size, dim},
                                    "vocab_size, hidden_size", &w.bytes));
  } else if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"lm_head.weight\" is missing from the checkpoint in ", ckpt.dir(),
        " and config.json has tie_word_embeddings=false"));
  }
  // Layers the config does not know about mean the config and the weights disagree.
  for (const auto& [name, entry] : ckpt.tensors()) {
    if (!absl::StartsWith(name, "model.layers.")) continue;
    std::vector<std::string> parts = absl::StrSplit(name, '.');
    int64_t layer = -1;
    if (parts.size() > 2 && absl::SimpleAtoi(parts[2], &layer) && layer >= c.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          entry->file, ": tensor \"", name, "\" belongs to layer ", layer,
          " but config.json has num_hidden_layers=", c.num_hidden_layers,
          "; the config and the weights disagree"));
    }
  }
  return w;
}

}  // namespace tessera
