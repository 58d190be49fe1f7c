#include "runtime/llama_weights.h"

#include <cstring>
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
absl::StatusOr<TensorView> Get(Checkpoint& ckpt, const std::string& name,
                               std::vector<int64_t> expected, absl::string_view hint) {
  ASSIGN_OR_RETURN(const TensorEntry* t, ckpt.Find(name));
  if (t->dtype == DType::kI32 || t->dtype == DType::kU8) {
    return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor \"", name, "\" has dtype ",
                                                   DTypeName(t->dtype),
                                                   "; weights must be F32, F16 or BF16"));
  }
  if (t->shape != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        t->file, ": tensor \"", name, "\" has shape ", ShapeString(t->shape), " but config.json (",
        hint, ") implies ", ShapeString(expected), "; the config and the weights disagree"));
  }
  return t->view();
}

// Columns [begin, begin + count) of a [rows, cols] weight, copied (RowParallel shards).
TensorView CopyColumns(const TensorView& w, int64_t begin, int64_t count,
                       std::vector<Tensor>* owned) {
  if (begin == 0 && count == w.dim(1)) return w;
  owned->emplace_back(w.dtype, std::vector<int64_t>{w.dim(0), count});
  const TensorView out = owned->back().view();
  const size_t elem = DTypeSize(w.dtype);
  for (int64_t r = 0; r < w.dim(0); ++r) {
    std::memcpy(out.as<char>() + r * count * elem, w.as<const char>() + (r * w.dim(1) + begin) * elem,
                count * elem);
  }
  return out;
}

}  // namespace

absl::StatusOr<LlamaWeights> LoadLlamaWeights(Checkpoint& ckpt, const ModelConfig& c,
                                              const ShardPlan& plan, const ModelOptions& options) {
  const bool head_on_stage = HeadOnStage(options, plan);
  // Checked first, from the tensor names alone, before any weight is read.
  // Layers the config does not know about mean the config and the weights disagree.
  for (const auto& [name, file] : ckpt.names()) {
    if (!absl::StartsWith(name, "model.layers.")) continue;
    std::vector<std::string> parts = absl::StrSplit(name, '.');
    int64_t layer = -1;
    if (parts.size() > 2 && absl::SimpleAtoi(parts[2], &layer) && layer >= c.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          ckpt.dir(), "/", file, ": tensor \"", name, "\" belongs to layer ", layer,
          " but config.json has num_hidden_layers=", c.num_hidden_layers,
          "; the config and the weights disagree"));
    }
  }
  LlamaWeights w;
  const int64_t dim = c.hidden_size, hd = c.head_dim, q_dim = c.num_attention_heads * hd,
                kv_dim = c.num_key_value_heads * hd, ffn = c.intermediate_size;
  const int64_t q0 = plan.head_begin * hd, q_len = plan.heads * hd;
  const int64_t kv0 = plan.kv_head_begin * hd, kv_len = plan.kv_heads * hd;
  const bool need_head = plan.last_stage() || head_on_stage;
  const bool need_embed = plan.first_stage() || (need_head && c.tie_word_embeddings &&
                                                 !ckpt.Contains("lm_head.weight"));
  auto rows = [&](TensorView v, int64_t begin, int64_t count) {
    TensorView s = v.Rows(begin, begin + count);
    w.bytes += s.bytes();
    return s;
  };
  if (need_embed) {
    ASSIGN_OR_RETURN(TensorView embed, Get(ckpt, "model.embed_tokens.weight", {c.vocab_size, dim},
                                           "vocab_size, hidden_size"));
    w.embed = rows(embed, plan.vocab_begin, plan.vocab_rows);
  }
  for (int64_t i = plan.layer_begin; i < plan.layer_end; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights l;
    const size_t before = w.bytes;
    ASSIGN_OR_RETURN(TensorView attn_norm, Get(ckpt, p + "input_layernorm.weight", {dim}, "hidden_size"));
    ASSIGN_OR_RETURN(TensorView wq, Get(ckpt, p + "self_attn.q_proj.weight", {q_dim, dim},
                                        "num_attention_heads * head_dim, hidden_size"));
    ASSIGN_OR_RETURN(TensorView wk, Get(ckpt, p + "self_attn.k_proj.weight", {kv_dim, dim},
                                        "num_key_value_heads * head_dim, hidden_size"));
    ASSIGN_OR_RETURN(TensorView wv, Get(ckpt, p + "self_attn.v_proj.weight", {kv_dim, dim},
                                        "num_key_value_heads * head_dim, hidden_size"));
    ASSIGN_OR_RETURN(TensorView wo, Get(ckpt, p + "self_attn.o_proj.weight", {dim, q_dim},
                                        "hidden_size, num_attention_heads * head_dim"));
    ASSIGN_OR_RETURN(TensorView mlp_norm, Get(ckpt, p + "post_attention_layernorm.weight", {dim},
                                              "hidden_size"));
    ASSIGN_OR_RETURN(TensorView gate, Get(ckpt, p + "mlp.gate_proj.weight", {ffn, dim},
                                          "intermediate_size, hidden_size"));
    ASSIGN_OR_RETURN(TensorView up, Get(ckpt, p + "mlp.up_proj.weight", {ffn, dim},
                                        "intermediate_size, hidden_size"));
    ASSIGN_OR_RETURN(TensorView down, Get(ckpt, p + "mlp.down_proj.weight", {dim, ffn},
                                          "hidden_size, intermediate_size"));
    for (const TensorView& t : {attn_norm, wq, wk, wv, wo, mlp_norm, gate, up, down}) {
      w.stage_layer_bytes += t.bytes();
    }
    l.attn_norm = rows(attn_norm, 0, dim);
    l.mlp_norm = rows(mlp_norm, 0, dim);
    l.wq = rows(wq, q0, q_len);
    l.wk = rows(wk, kv0, kv_len);
    l.wv = rows(wv, kv0, kv_len);
    l.w_gate = rows(gate, plan.ffn_begin, plan.ffn);
    l.w_up = rows(up, plan.ffn_begin, plan.ffn);
    l.wo = CopyColumns(wo, q0, q_len, &w.owned);
    l.w_down = CopyColumns(down, plan.ffn_begin, plan.ffn, &w.owned);
    w.bytes += l.wo.bytes() + l.w_down.bytes();
    w.layer_bytes += w.bytes - before;
    w.layers.push_back(l);
  }
  if (need_head) {
    ASSIGN_OR_RETURN(TensorView norm, Get(ckpt, "model.norm.weight", {dim}, "hidden_size"));
    w.final_norm = rows(norm, 0, dim);
    if (ckpt.Contains("lm_head.weight")) {
      ASSIGN_OR_RETURN(TensorView head, Get(ckpt, "lm_head.weight", {c.vocab_size, dim},
                                            "vocab_size, hidden_size"));
      w.lm_head = rows(head, plan.vocab_begin, plan.vocab_rows);
    } else if (c.tie_word_embeddings) {
      w.lm_head = w.embed;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"lm_head.weight\" is missing from the checkpoint in ", ckpt.dir(),
          " and config.json has tie_word_embeddings=false"));
    }
  }
  for (const ExtraWeight& extra : options.extra_weights) {
    const ExtraWeightSlice slice = SliceOf(extra, c, plan);
    for (const std::string& name : NamesOnStage(extra, plan)) {
      if (extra.optional && !ckpt.Contains(name)) continue;
      ASSIGN_OR_RETURN(TensorView t, Get(ckpt, name, extra.shape, "the method's declared shape"));
      if (slice.axis == 0) {
        w.extra[name] = rows(t, slice.begin, slice.count);
      } else {
        w.extra[name] = CopyColumns(t, slice.begin, slice.count, &w.owned);
        w.bytes += w.extra[name].bytes();
      }
    }
  }
  return w;
}

}  // namespace tessera
