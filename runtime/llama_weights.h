// LlamaWeights: the views of every weight a Llama forward pass reads, checked against the config.
//
// Tensor names and layouts are Hugging Face's (weights are [out_features, in_features]):
//   model.embed_tokens.weight                   (vocab, dim)
//   model.layers.{i}.input_layernorm.weight     (dim)
//   model.layers.{i}.self_attn.q_proj.weight    (n_heads * head_dim, dim)
//   model.layers.{i}.self_attn.k_proj.weight    (n_kv_heads * head_dim, dim)   likewise v_proj
//   model.layers.{i}.self_attn.o_proj.weight    (dim, n_heads * head_dim)
//   model.layers.{i}.post_attention_layernorm.weight (dim)
//   model.layers.{i}.mlp.gate_proj.weight       (hidden_dim, dim)              likewise up_proj
//   model.layers.{i}.mlp.down_proj.weight       (dim, hidden_dim)
//   model.norm.weight                           (dim)
//   lm_head.weight                              (vocab, dim), absent when embeddings are tied
// With a ShardPlan, a rank holds only its slices: ColumnParallel weights (q, k, v, gate, up) are
// row ranges and stay views into the mapping (the pages of other ranks' rows are never read);
// RowParallel weights (o, down) are column ranges, copied into owned buffers; the embedding and
// LM head hold the rank's vocabulary rows; only the stage's layers are loaded. The views point
// into the Checkpoint's mappings, which must outlive them.
#ifndef TESSERA_RUNTIME_LLAMA_WEIGHTS_H_
#define TESSERA_RUNTIME_LLAMA_WEIGHTS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"
#include "runtime/model_config.h"
#include "runtime/model_options.h"
#include "runtime/safetensors.h"
#include "runtime/shard_plan.h"
#include "runtime/tensor.h"

namespace tessera {

struct LayerWeights {
  TensorView attn_norm, wq, wk, wv, wo;
  TensorView mlp_norm, w_gate, w_up, w_down;
  // ModelOptions::extension's projections of this layer (empty: the layer's own), this rank's
  // slices, set by LlamaModel from `extra`.
  TensorView ext_wq, ext_wk, ext_wv, ext_wo;
};

struct LlamaWeights {
  TensorView embed;                  // [vocab_rows, dim]; first stage, and last stage when tied
  std::vector<LayerWeights> layers;  // the stage's layers, in order
  TensorView final_norm;             // stages with a head (the last, and any asked for)
  TensorView lm_head;                // [vocab_rows, dim] on those stages; the embedding when tied
  size_t bytes = 0;        // weight bytes this rank holds (a tied head counted once)
  size_t layer_bytes = 0;  // of which in decoder layers
  size_t stage_layer_bytes = 0;  // whole (unsharded) decoder layers of this stage, for reports
  std::map<std::string, TensorView> extra;  // a method's tensors by checkpoint name
  std::vector<Tensor> owned;  // copies of RowParallel column slices
};

// Finds and checks every tensor this rank needs: present, of F32/F16/BF16, of the full shape the
// config implies (checked from the header before any data is read); then takes this rank's
// slices. A checkpoint with layers beyond num_hidden_layers, or a config that disagrees with the
// weights, is refused with a message naming the tensor and the config field.
// The final norm and LM head are loaded on the last stage, and also on a stage holding one of
// `options.head_after_layers` (an early exit's head); `options.extra_weights` that this stage
// holds are loaded into `extra` (this rank's slices), each checked against its declared shape.
absl::StatusOr<LlamaWeights> LoadLlamaWeights(Checkpoint& ckpt, const ModelConfig& config,
                                              const ShardPlan& plan,
                                              const ModelOptions& options = {});

}  // namespace tessera

#endif  // TESSERA_RUNTIME_LLAMA_WEIGHTS_H_
