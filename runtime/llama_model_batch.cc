// LlamaModel: a batch's buffers and cache entries: the checks of a ForwardBatch, the activation
// buffers (listed once), the cache entries each token takes in every layer, and the uploads of
// the batch's index arrays.
#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"
#include "runtime/rope_frequencies.h"

namespace tessera {

absl::Status LlamaModel::CheckBatch(const ForwardBatch& b, const KvCache& cache) const {
  const size_t n = b.tokens.size();
  if (b.positions.size() != n || b.slots.size() != n) {
    return absl::InvalidArgumentError("ForwardBatch: tokens, positions and slots differ in length");
  }
  for (size_t i = 0; i < n; ++i) {
    const int64_t ids = config_.vocab_size + options_.extension.count;
    if (b.tokens[i] < 0 || b.tokens[i] >= ids) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", b.tokens[i], " is outside the vocabulary [0, ", config_.vocab_size, ")",
          options_.extension.count > 0
              ? absl::StrCat(" and the extension tokens [", config_.vocab_size, ", ", ids, ")")
              : ""));
    }
    if (b.positions[i] < 0) {
      return absl::OutOfRangeError(absl::StrCat("position ", b.positions[i], " is negative"));
    }
    if (b.slots[i] < 0 || b.slots[i] >= cache.n_slots()) {
      return absl::OutOfRangeError(absl::StrCat("cache slot ", b.slots[i], " does not exist"));
    }
  }
  if (b.first_layer < 0 || b.first_layer >= config_.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: first_layer ", b.first_layer,
                                                   " is outside the model's layers 0..",
                                                   config_.num_hidden_layers - 1));
  }
  if (b.first_layer > 0 && InputStage(b) == plan_.pp_rank &&
      (b.input.rank != 2 || b.input.dim(0) != static_cast<int64_t>(n) ||
       b.input.dim(1) != config_.hidden_size || b.input.dtype != DType::kF32)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ForwardBatch: a pass resuming at layer ", b.first_layer, " needs its input as F32 [",
        n, ", ", config_.hidden_size, "] on pipeline stage ", plan_.pp_rank));
  }
  if (b.last_layer != 0 &&
      (b.last_layer <= b.first_layer || b.last_layer > config_.num_hidden_layers || b.kv_only)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ForwardBatch: last_layer ", b.last_layer, " must be in (first_layer ", b.first_layer,
        ", ", config_.num_hidden_layers, "], without kv_only"));
  }
  for (int32_t r : b.logit_rows) {
    if (r < 0 || static_cast<size_t>(r) >= n) {
      return absl::InvalidArgumentError(absl::StrCat("logit row ", r, " is outside the batch"));
    }
    if (b.tokens[r] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logit row ", r, " is an extension token (id ", b.tokens[r], "): it has no logits"));
    }
  }
  if (!b.key_positions.empty()) {
    if (b.key_positions.size() != n) {
      return absl::InvalidArgumentError("ForwardBatch: key_positions and tokens differ in length");
    }
    if (RopeDependsOnLength(config_)) {
      return absl::UnimplementedError(
          "ForwardBatch: key_positions with a rope_scaling whose frequencies depend on the "
          "sequence length (dynamic) are not supported");
    }
    for (int32_t p : b.key_positions) {
      if (p < 0) return absl::OutOfRangeError(absl::StrCat("key position ", p, " is negative"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::pair<Tensor*, int64_t>> LlamaModel::Activations() {
  const ModelConfig& c = config_;
  return {{&x_, c.hidden_size},
          {&h_, c.hidden_size},
          {&q_, plan_.heads * c.head_dim},
          {&k_, plan_.kv_heads * c.head_dim},
          {&v_, plan_.kv_heads * c.head_dim},
          {&attn_, plan_.heads * c.head_dim},
          {&gate_, plan_.ffn},
          {&up_, plan_.ffn},
          {&selected_, c.hidden_size},
          {&head_, plan_.vocab_rows}};
}

absl::Status LlamaModel::ResizeActivations(int64_t rows, int64_t logit_rows) {
  for (auto [tensor, width] : Activations()) {
    const bool head = tensor == &selected_ || tensor == &head_;
    RETURN_IF_ERROR(tensor->Resize({head ? logit_rows : rows, width}));
  }
  for (Tensor* t : {&tokens_, &positions_, &slots_, &rows_, &entries_}) {
    RETURN_IF_ERROR(t->Resize({rows}));
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::ReserveEntries(const ForwardBatch& b, KvCache& cache, int64_t from) {
  const int64_t n = static_cast<int64_t>(b.tokens.size()), layers = plan_.layers();
  // Each slot's rows in batch order: they take consecutive entries after the slot's entries
  // from before this step.
  std::map<int32_t, std::vector<int32_t>> rows_of_slot;
  for (int64_t i = 0; i < n; ++i) rows_of_slot[b.slots[i]].push_back(static_cast<int32_t>(i));
  const int64_t end = LocalEnd(b);
  for (int64_t l = from; l < end; ++l) {
    for (const auto& [slot, rows] : rows_of_slot) {
      const int32_t base = base_lengths_.at({l, slot});
      if (base + static_cast<int64_t>(rows.size()) > cache.max_seq()) {
        return absl::OutOfRangeError(absl::StrCat(
            "KV cache slot ", slot, " holds ", base, " entries in layer ", plan_.layer_begin + l,
            " and cannot take the batch's ", rows.size(), " more: its capacity is ",
            cache.max_seq(), " entries"));
      }
    }
  }
  entries_host_.assign(layers * n, 0);
  std::vector<int32_t> positions;
  for (int64_t l = from; l < end; ++l) {
    for (const auto& [slot, rows] : rows_of_slot) {
      RETURN_IF_ERROR(cache.Truncate(l, slot, base_lengths_.at({l, slot})));
      positions.clear();
      const std::vector<int32_t>& recorded = b.key_positions.empty() ? b.positions : b.key_positions;
      for (int32_t r : rows) positions.push_back(recorded[r]);
      ASSIGN_OR_RETURN(const int32_t first, cache.Append(l, slot, positions));
      for (size_t j = 0; j < rows.size(); ++j) {
        entries_host_[l * n + rows[j]] = first + static_cast<int32_t>(j);
      }
    }
  }
  uniform_entries_ = true;
  for (int64_t l = from + 1; l < end && uniform_entries_; ++l) {
    uniform_entries_ = std::equal(entries_host_.begin() + from * n,
                                  entries_host_.begin() + (from + 1) * n,
                                  entries_host_.begin() + l * n);
  }
  if (uniform_entries_ && layers > 0) {
    entries_host_.erase(entries_host_.begin(), entries_host_.begin() + from * n);
    entries_host_.resize(n);
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::UploadBatch(const ForwardBatch& batch) {
  RETURN_IF_ERROR(UploadExtensionRows(batch));
  if (!batch.key_positions.empty()) RETURN_IF_ERROR(Upload(batch.key_positions, &key_positions_));
  RETURN_IF_ERROR(Upload(batch.positions, &positions_));
  RETURN_IF_ERROR(Upload(batch.slots, &slots_));
  RETURN_IF_ERROR(Upload(entries_host_, &entries_));  // [n], or [layers * n] when they differ
  return Upload(batch.logit_rows, &rows_);
}

absl::Status LlamaModel::Prepare(const ForwardBatch& batch, int64_t rows_capacity) {
  // Sizing to the capacity first keeps buffer addresses fixed for every smaller batch, which a
  // captured graph relies on.
  if (rows_capacity > 0) RETURN_IF_ERROR(ResizeActivations(rows_capacity, rows_capacity));
  RETURN_IF_ERROR(ResizeActivations(static_cast<int64_t>(batch.tokens.size()),
                                    static_cast<int64_t>(batch.logit_rows.size())));
  // A buffer that moved invalidates every captured graph.
  std::vector<const void*> buffers;
  for (auto [tensor, width] : Activations()) buffers.push_back(tensor->view().data);
  for (const Tensor* t : {&tokens_, &positions_, &slots_, &rows_, &entries_}) {
    buffers.push_back(t->view().data);
  }
  if (graphs_ != nullptr && buffers != graph_buffers_) {
    graphs_->Clear();
    graph_buffers_ = std::move(buffers);
  }
  return UploadBatch(batch);
}

}  // namespace tessera
