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
// The views point into the Checkpoint's mappings, which must outlive them.
#ifndef TESSERA_RUNTIME_LLAMA_WEIGHTS_H_
#define TESSERA_RUNTIME_LLAMA_WEIGHTS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"

namespace tessera {

struct LayerWeights {
  TensorView attn_norm, wq, wk, wv, wo;
  TensorView mlp_norm, w_gate, w_up, w_down;
};

struct LlamaWeights {
  TensorView embed;
  std::vector<LayerWeights> layers;
  TensorView final_norm;
  TensorView lm_head;  // == embed when tied
  size_t bytes = 0;    // distinct weight bytes referenced (a tied head is counted once)
};

// Finds and checks every tensor: present, of F32/F16/BF16, of the shape the config implies.
// A checkpoint with layers beyond num_hidden_layers, or a config that disagrees with the weights,
// is refused with a message naming the tensor and the config field.
absl::StatusOr<LlamaWeights> LoadLlamaWeights(const Checkpoint& ckpt, const ModelConfig& config);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_LLAMA_WEIGHTS_H_
