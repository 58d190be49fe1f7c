// LlamaModel: the Llama forward pass over a ragged batch of tokens.
//
// A ForwardBatch lays the tokens of several sequences end to end. Token i belongs to the
// sequence in cache slot slots[i] and sits at positions[i]; it attends to that slot's cache
// entries 0..positions[i] (its own K/V are written first). Prefill (many tokens of one sequence),
// decode (one token per sequence) and mixtures of both are the same call.
//
//   LlamaModel::Load(dir, backend) -> model
//   KvCache cache(model->config(), n_slots, max_seq);
//   model->Forward({tokens, positions, slots, logit_rows}, cache, &logits);  // logits [rows, vocab]
//
// Not thread-safe: scratch buffers are reused across calls.
#ifndef TESSERA_RUNTIME_LLAMA_MODEL_H_
#define TESSERA_RUNTIME_LLAMA_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/kv_cache.h"
#include "runtime/llama_weights.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace tessera {

struct ForwardBatch {
  std::vector<int32_t> tokens;      // [n] token ids
  std::vector<int32_t> positions;   // [n] position within its sequence
  std::vector<int32_t> slots;       // [n] KV cache slot of its sequence
  std::vector<int32_t> logit_rows;  // indices into [0, n) whose logits are wanted, in output order
};

class LlamaModel {
 public:
  // Reads DIR/config.json and maps the safetensors weights. `backend` must outlive the model.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                          Backend* backend);

  const ModelConfig& config() const { return config_; }
  const LlamaWeights& weights() const { return weights_; }
  size_t weight_bytes() const { return weights_.bytes; }

  // Runs the batch through every layer, appending its K/V to `cache`, and writes the logits of
  // batch.logit_rows into `logits` as F32 [logit_rows.size(), vocab_size].
  absl::Status Forward(const ForwardBatch& batch, KvCache& cache, Tensor* logits);

 private:
  LlamaModel() = default;
  absl::Status CheckBatch(const ForwardBatch& batch, const KvCache& cache) const;
  absl::Status ApplyRope(const ForwardBatch& batch, TensorView positions, TensorView q,
                         TensorView k);
  absl::Status Layer(const LayerWeights& w, int64_t layer, TensorView positions, TensorView slots,
                     KvCache& cache);

  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  LlamaWeights weights_;
  Backend* backend_ = nullptr;
  std::vector<float> inv_freq_;  // fixed-length rope frequencies (non-dynamic scaling)
  float attention_scaling_ = 1.0f;
  const ForwardBatch* batch_ = nullptr;  // the batch of the Forward call in progress
  // Scratch, resized per call: residual x, normed h, q/k/v, attention output, MLP gate/up.
  Tensor x_, h_, q_, k_, v_, attn_, gate_, up_, selected_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_LLAMA_MODEL_H_
