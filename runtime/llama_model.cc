#include "runtime/llama_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/rope_frequencies.h"

namespace tessera {
namespace {

TensorView I32View(const std::vector<int32_t>& v) {
  return TensorView::Of(v.data(), DType::kI32, {static_cast<int64_t>(v.size())});
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir,
                                                             Backend* backend) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->backend_ = backend;
  ASSIGN_OR_RETURN(m->config_, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(m->checkpoint_, Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(m->weights_, LoadLlamaWeights(*m->checkpoint_, m->config_));
  RopeFrequencies rope = ComputeRopeFrequencies(m->config_, /*seq_len=*/0);
  m->inv_freq_ = std::move(rope.inv_freq);
  m->attention_scaling_ = rope.attention_scaling;
  return m;
}

absl::Status LlamaModel::CheckBatch(const ForwardBatch& b, const KvCache& cache) const {
  const size_t n = b.tokens.size();
  if (b.positions.size() != n || b.slots.size() != n) {
    return absl::InvalidArgumentError("ForwardBatch: tokens, positions and slots differ in length");
  }
  for (size_t i = 0; i < n; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", b.tokens[i],
                                                     " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
    if (b.positions[i] < 0 || b.positions[i] >= cache.max_seq()) {
      return absl::OutOfRangeError(absl::StrCat("position ", b.positions[i],
                                                " is beyond the KV cache length ", cache.max_seq()));
    }
    if (b.slots[i] < 0 || b.slots[i] >= cache.n_slots()) {
      return absl::OutOfRangeError(absl::StrCat("cache slot ", b.slots[i], " does not exist"));
    }
  }
  for (int32_t r : b.logit_rows) {
    if (r < 0 || static_cast<size_t>(r) >= n) {
      return absl::InvalidArgumentError(absl::StrCat("logit row ", r, " is outside the batch"));
    }
  }
  return absl::OkStatus();
}

// Rotary embedding of q and k. With dynamic NTK scaling the frequencies depend on each
// sequence's length, so runs of tokens of one slot are rotated with their own frequencies.
absl::Status LlamaModel::ApplyRope(const ForwardBatch& b, TensorView positions, TensorView q,
                                   TensorView k) {
  const int64_t n = static_cast<int64_t>(b.tokens.size());
  if (!RopeDependsOnLength(config_)) {
    TensorView inv = TensorView::Of(inv_freq_.data(), DType::kF32, {config_.head_dim / 2});
    RETURN_IF_ERROR(backend_->Rope({q, positions, inv, attention_scaling_}));
    return backend_->Rope({k, positions, inv, attention_scaling_});
  }
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin;
    int32_t max_pos = 0;
    while (end < n && b.slots[end] == b.slots[begin]) max_pos = std::max(max_pos, b.positions[end++]);
    RopeFrequencies rope = ComputeRopeFrequencies(config_, max_pos + 1);
    TensorView inv = TensorView::Of(rope.inv_freq.data(), DType::kF32, {config_.head_dim / 2});
    TensorView pos = positions.Rows(begin, end);
    RETURN_IF_ERROR(backend_->Rope({q.Rows(begin, end), pos, inv, rope.attention_scaling}));
    RETURN_IF_ERROR(backend_->Rope({k.Rows(begin, end), pos, inv, rope.attention_scaling}));
    begin = end;
  }
  return absl::OkStatus();
}

// One decoder layer, as transformers' LlamaDecoderLayer:
//   x += o_proj(attention(rope(q_proj(norm(x))), rope(k_proj(..)), v_proj(..)))
//   x += down_proj(silu(gate_proj(norm(x))) * up_proj(norm(x)))
absl::Status LlamaModel::Layer(const LayerWeights& w, int64_t layer, TensorView positions,
                               TensorView slots, KvCache& cache) {
  const ModelConfig& c = config_;
  const int64_t n = x_.dim(0);
  const float eps = static_cast<float>(c.rms_norm_eps);
  Backend& be = *backend_;

  RETURN_IF_ERROR(be.RmsNorm({x_.view(), w.attn_norm, h_.view(), eps}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.wq, q_.view()}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.wk, k_.view()}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.wv, v_.view()}));
  TensorView q = q_.view().Reshaped({n, c.num_attention_heads, c.head_dim});
  TensorView k = k_.view().Reshaped({n, c.num_key_value_heads, c.head_dim});
  TensorView v = v_.view().Reshaped({n, c.num_key_value_heads, c.head_dim});
  RETURN_IF_ERROR(ApplyRope(*batch_, positions, q, k));
  RETURN_IF_ERROR(be.KvWrite({k, v, cache.k(layer), cache.v(layer), slots, positions}));
  TensorView attn = attn_.view().Reshaped({n, c.num_attention_heads, c.head_dim});
  AttentionArgs aa{q, cache.k(layer), cache.v(layer), slots, positions, attn};
  aa.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  RETURN_IF_ERROR(be.Attention(aa));
  RETURN_IF_ERROR(be.Gemm({attn_.view(), w.wo, x_.view(), /*accumulate=*/true}));

  RETURN_IF_ERROR(be.RmsNorm({x_.view(), w.mlp_norm, h_.view(), eps}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.w_gate, gate_.view()}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.w_up, up_.view()}));
  RETURN_IF_ERROR(be.SiluMul({gate_.view(), up_.view(), gate_.view()}));
  return be.Gemm({gate_.view(), w.w_down, x_.view(), /*accumulate=*/true});
}

absl::Status LlamaModel::Forward(const ForwardBatch& batch, KvCache& cache, Tensor* logits) {
  RETURN_IF_ERROR(CheckBatch(batch, cache));
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(batch.tokens.size());
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  x_.Resize({n, c.hidden_size});
  h_.Resize({n, c.hidden_size});
  q_.Resize({n, q_dim});
  k_.Resize({n, kv_dim});
  v_.Resize({n, kv_dim});
  attn_.Resize({n, q_dim});
  gate_.Resize({n, c.intermediate_size});
  up_.Resize({n, c.intermediate_size});
  batch_ = &batch;

  const TensorView positions = I32View(batch.positions), slots = I32View(batch.slots);
  RETURN_IF_ERROR(backend_->Embedding({I32View(batch.tokens), weights_.embed, x_.view()}));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    RETURN_IF_ERROR(Layer(weights_.layers[l], l, positions, slots, cache));
  }
  // Final norm and LM head on the requested rows only (the gather is an embedding lookup
  // into the residual stream).
  const int64_t rows = static_cast<int64_t>(batch.logit_rows.size());
  selected_.Resize({rows, c.hidden_size});
  RETURN_IF_ERROR(backend_->Embedding({I32View(batch.logit_rows), x_.view(), selected_.view()}));
  RETURN_IF_ERROR(backend_->RmsNorm({selected_.view(), weights_.final_norm, selected_.view(),
                                     static_cast<float>(c.rms_norm_eps)}));
  logits->Resize({rows, c.vocab_size});
  RETURN_IF_ERROR(backend_->Gemm({selected_.view(), weights_.lm_head, logits->view()}));
  batch_ = nullptr;
  return backend_->Synchronize();
}

}  // namespace tessera
