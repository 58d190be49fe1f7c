#include "runtime/llama_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/rope_frequencies.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir,
                                                             Backend* backend,
                                                             const ModelParallelism& parallel,
                                                             const ModelOptions& options) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->backend_ = backend;
  m->parallel_ = parallel;
  m->options_ = options;
  ASSIGN_OR_RETURN(m->config_, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(m->plan_, MakeShardPlan(m->config_, parallel.layout, parallel.stage_layers));
  if (m->plan_.tp_size > 1 && parallel.tp == nullptr) {
    return absl::InvalidArgumentError("tensor parallel layout without a tp communicator");
  }
  if (m->plan_.pp_size > 1 && parallel.pp == nullptr) {
    return absl::InvalidArgumentError("pipeline parallel layout without a pp communicator");
  }
  for (int64_t l : options.head_after_layers) {
    if (l < 0 || l >= m->config_.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a head after layer ", l, " was asked for; the model has layers 0..",
          m->config_.num_hidden_layers - 1));
    }
  }
  ASSIGN_OR_RETURN(m->checkpoint_, Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(m->weights_,
                   LoadLlamaWeights(*m->checkpoint_, m->config_, m->plan_, options));
  if (backend->device() != Device::kCpu) RETURN_IF_ERROR(m->UploadWeights());
  RETURN_IF_ERROR(m->ResolveExtension());
  for (auto [tensor, width] : m->Activations()) *tensor = Tensor(backend, DType::kF32);
  for (Tensor* t : {&m->tokens_, &m->positions_, &m->slots_, &m->rows_, &m->entries_}) {
    *t = Tensor(backend, DType::kI32);
  }
  m->inv_freq_ = Tensor(backend, DType::kF32);
  m->exit_head_ = Tensor(backend, DType::kF32);
  m->exit_normed_ = Tensor(backend, DType::kF32);
  m->partial_ = Tensor(backend, DType::kF32);
  m->keep_rows_ = Tensor(backend, DType::kI32);
  for (Tensor* t : {&m->ext_rows_, &m->ext_map_, &m->ext_ids_, &m->key_positions_}) {
    *t = Tensor(backend, DType::kI32);
  }
  for (Tensor* t : {&m->ext_in_, &m->ext_cat_, &m->k_alt_}) *t = Tensor(backend, DType::kF32);
  RopeFrequencies rope = ComputeRopeFrequencies(m->config_, /*seq_len=*/0);
  RETURN_IF_ERROR(m->Upload(rope.inv_freq, &m->inv_freq_));
  m->attention_scaling_ = rope.attention_scaling;
  m->vocab_ = std::make_unique<VocabReducer>(backend, parallel.tp, m->plan_);
  return m;
}

// Device backends get a copy of every weight slice; the CPU backend computes straight from the
// memory-mapped checkpoint.
absl::Status LlamaModel::UploadWeights() {
  auto upload = [&](TensorView* w) -> absl::Status {
    if (w->empty()) return absl::OkStatus();
    device_weights_.emplace_back(backend_, w->dtype);
    Tensor& t = device_weights_.back();
    std::vector<int64_t> dims(w->shape.begin(), w->shape.begin() + w->rank);
    RETURN_IF_ERROR(t.Resize(dims));
    RETURN_IF_ERROR(backend_->CopyToDevice(t.view().data, w->data, w->bytes()));
    *w = t.view();
    return absl::OkStatus();
  };
  const bool tied = weights_.lm_head.data == weights_.embed.data;
  RETURN_IF_ERROR(upload(&weights_.embed));
  for (LayerWeights& l : weights_.layers) {
    for (TensorView* w : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.mlp_norm, &l.w_gate,
                          &l.w_up, &l.w_down}) {
      RETURN_IF_ERROR(upload(w));
    }
  }
  RETURN_IF_ERROR(upload(&weights_.final_norm));
  for (auto& [name, view] : weights_.extra) RETURN_IF_ERROR(upload(&view));
  if (tied) {
    weights_.lm_head = weights_.embed;
  } else {
    RETURN_IF_ERROR(upload(&weights_.lm_head));
  }
  weights_.owned.clear();  // host copies of RowParallel slices are no longer needed
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> LlamaModel::MakeCache(int64_t n_slots,
                                                               int64_t max_seq) const {
  return KvCache::Create(backend_, plan_.layers(), plan_.kv_heads, config_.head_dim, n_slots,
                         max_seq, parallel_.kv_dtype);
}

absl::StatusOr<std::unique_ptr<KvCache>> LlamaModel::MakeLayerScratchCache(
    int64_t n_slots, int64_t max_seq) const {
  return KvCache::CreateLayerScratch(backend_, plan_.layers(), plan_.kv_heads, config_.head_dim,
                                     n_slots, max_seq, parallel_.kv_dtype);
}

absl::StatusOr<KvCache*> LlamaModel::AcquireCache(int64_t n_slots, int64_t max_seq) {
  if (pooled_cache_ == nullptr || pooled_cache_->n_slots() < n_slots ||
      pooled_cache_->max_seq() < max_seq) {
    if (graphs_ != nullptr && pooled_cache_ != nullptr) graphs_->Clear();
    pooled_cache_.reset();  // free first: the device may not hold both
    ASSIGN_OR_RETURN(pooled_cache_, MakeCache(n_slots, max_seq));
  }
  pooled_cache_->ClearAll();
  return pooled_cache_.get();
}

// Rotary embedding of q and k. With dynamic NTK scaling the frequencies depend on each
// sequence's length, so runs of tokens of one slot are rotated with their own frequencies.
absl::Status LlamaModel::ApplyRope(const ForwardBatch& b, TensorView q, TensorView k) {
  const TensorView positions = positions_.view();
  if (!RopeDependsOnLength(config_)) {
    if (!q.empty()) RETURN_IF_ERROR(backend_->Rope({q, positions, inv_freq_.view(), attention_scaling_}));
    return backend_->Rope({k, positions, inv_freq_.view(), attention_scaling_});
  }
  const int64_t n = static_cast<int64_t>(b.tokens.size());
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin;
    int32_t max_pos = 0;
    while (end < n && b.slots[end] == b.slots[begin]) max_pos = std::max(max_pos, b.positions[end++]);
    RopeFrequencies rope = ComputeRopeFrequencies(config_, max_pos + 1);
    RETURN_IF_ERROR(backend_->Synchronize());  // the previous run may still read inv_freq_
    RETURN_IF_ERROR(Upload(rope.inv_freq, &inv_freq_));
    const TensorView pos = positions.Rows(begin, end);
    if (!q.empty()) {
      RETURN_IF_ERROR(
          backend_->Rope({q.Rows(begin, end), pos, inv_freq_.view(), rope.attention_scaling}));
    }
    RETURN_IF_ERROR(backend_->Rope({k.Rows(begin, end), pos, inv_freq_.view(), rope.attention_scaling}));
    begin = end;
  }
  return absl::OkStatus();
}

// One decoder layer, as transformers' LlamaDecoderLayer:
//   x += o_proj(attention(rope(q_proj(norm(x))), rope(k_proj(..)), v_proj(..)))
//   x += down_proj(silu(gate_proj(norm(x))) * up_proj(norm(x)))
absl::Status LlamaModel::Layer(const LayerWeights& w, const LayerContext& ctx,
                               const AttentionVariant& variant, const RowKeys* row_keys) {
  const ModelConfig& c = config_;
  const int64_t n = x_.dim(0), layer = ctx.local_layer;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const TensorView slots = slots_.view();
  const TensorView entries =
      entries_.view().Rows(uniform_entries_ ? 0 : layer * n, uniform_entries_ ? n : (layer + 1) * n);
  KvCache& cache = *ctx.cache;
  Backend& be = *backend_;

  RETURN_IF_ERROR(be.RmsNorm({x_.view(), w.attn_norm, h_.view(), eps}));
  const bool moved_keys = !ctx.batch->key_positions.empty();
  TensorView k = k_.view().Reshaped({n, plan_.kv_heads, c.head_dim});
  TensorView v = v_.view().Reshaped({n, plan_.kv_heads, c.head_dim});
  // The keys the cache gets: rotated at the key positions where those differ from the queries'.
  auto write_kv = [&]() -> absl::Status {
    TensorView cached = k;
    if (moved_keys) {
      cached = k_alt_.view().Reshaped({n, plan_.kv_heads, c.head_dim});
      RETURN_IF_ERROR(RotateKeysAtKeyPositions(cached));
    }
    return be.KvWrite({cached, v, cache.k(layer), cache.v(layer), slots, entries});
  };
  auto keep_unrotated_keys = [&]() -> absl::Status {
    if (!moved_keys) return absl::OkStatus();
    RETURN_IF_ERROR(k_alt_.Resize({n, plan_.kv_heads * c.head_dim}));
    return be.CopyWithinDevice(k_alt_.view().data, k_.view().data, k_.view().bytes());
  };
  if (ctx.batch->kv_only) {
    RETURN_IF_ERROR(be.Gemm({h_.view(), w.wk, k_.view()}));
    RETURN_IF_ERROR(be.Gemm({h_.view(), w.wv, v_.view()}));
    if (!w.ext_wk.empty() || !w.ext_wv.empty()) RETURN_IF_ERROR(GatherExtensionRows(h_.view()));
    RETURN_IF_ERROR(ProjectExtensionRows(w.ext_wk, k_.view()));
    RETURN_IF_ERROR(ProjectExtensionRows(w.ext_wv, v_.view()));
    RETURN_IF_ERROR(keep_unrotated_keys());
    RETURN_IF_ERROR(ApplyRope(*ctx.batch, TensorView(), k));
    return write_kv();
  }
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.wq, q_.view()}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.wk, k_.view()}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.wv, v_.view()}));
  if (!w.ext_wq.empty() || !w.ext_wk.empty() || !w.ext_wv.empty()) {
    RETURN_IF_ERROR(GatherExtensionRows(h_.view()));  // once for q, k and v
  }
  RETURN_IF_ERROR(ProjectExtensionRows(w.ext_wq, q_.view()));
  RETURN_IF_ERROR(ProjectExtensionRows(w.ext_wk, k_.view()));
  RETURN_IF_ERROR(ProjectExtensionRows(w.ext_wv, v_.view()));
  TensorView q = q_.view().Reshaped({n, plan_.heads, c.head_dim});
  RETURN_IF_ERROR(keep_unrotated_keys());
  RETURN_IF_ERROR(ApplyRope(*ctx.batch, q, k));
  RETURN_IF_ERROR(write_kv());
  TensorView attn = attn_.view().Reshaped({n, plan_.heads, c.head_dim});
  AttentionArgs aa{q, cache.k(layer), cache.v(layer), slots, entries, attn};
  aa.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  aa.variant = variant;
  RETURN_IF_ERROR(be.Attention(aa));
  if (row_keys != nullptr && !row_keys->empty()) {
    if (variant.sparse() || variant.has_outputs() || !variant.key_scores.empty()) {
      return absl::InvalidArgumentError(
          "RowKeys rows cannot be combined with a sparse attention variant or its outputs");
    }
    RETURN_IF_ERROR(AttendRowKeys(*row_keys, ctx, q, k, v, attn, aa.scale));
  }
  if (!variant.key_scores.empty()) {
    const int64_t r = variant.score_row;
    if (r < 0 || r >= n) {
      return absl::InvalidArgumentError(absl::StrCat("AttentionVariant: score_row ", r,
                                                     " is outside the ", n, " rows"));
    }
    RETURN_IF_ERROR(be.KeyScores({q.Rows(r, r + 1).Reshaped({plan_.heads, c.head_dim}),
                                  cache.k(layer), variant.key_scores, ctx.batch->slots[r],
                                  aa.scale}));
  }
  RETURN_IF_ERROR(RowParallelResidual(attn_.view(), w.wo, w.ext_wo));

  RETURN_IF_ERROR(be.RmsNorm({x_.view(), w.mlp_norm, h_.view(), eps}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.w_gate, gate_.view()}));
  RETURN_IF_ERROR(be.Gemm({h_.view(), w.w_up, up_.view()}));
  RETURN_IF_ERROR(be.SiluMul({gate_.view(), up_.view(), gate_.view()}));
  return RowParallelResidual(gate_.view(), w.w_down);
}

absl::Status LlamaModel::RowParallelResidual(TensorView x, TensorView w, TensorView ext_w) {
  const bool ext = !ext_w.empty() && !ext_rows_host_.empty();
  if (plan_.tp_size == 1 && !ext) return backend_->Gemm({x, w, x_.view(), /*accumulate=*/true});
  RETURN_IF_ERROR(partial_.Resize({x.dim(0), w.dim(0)}));
  RETURN_IF_ERROR(backend_->Gemm({x, w, partial_.view()}));
  // Both row sets' partial sums share one all-reduce.
  if (ext) {
    RETURN_IF_ERROR(GatherExtensionRows(x));
    RETURN_IF_ERROR(ProjectExtensionRows(ext_w, partial_.view()));
  }
  if (plan_.tp_size == 1) return backend_->Add({x_.view(), partial_.view(), x_.view()});
  RETURN_IF_ERROR(backend_->Synchronize());
  RETURN_IF_ERROR(parallel_.tp->AllReduce(partial_.view(), ReduceOp::kSum));
  return backend_->Add({x_.view(), partial_.view(), x_.view()});
}

// Final norm and this rank's vocabulary shard of the LM head on the rows `rows` of `hidden`
// only (the gather of rows is an embedding lookup into the residual stream), into `out`.
absl::Status LlamaModel::LmHead(const ForwardBatch& batch, TensorView hidden, TensorView rows,
                                Tensor* out) {
  const int64_t n = static_cast<int64_t>(batch.logit_rows.size());
  const TensorView selected = selected_.view().Rows(0, n);
  RETURN_IF_ERROR(backend_->Embedding({rows.Rows(0, n), hidden, selected}));
  RETURN_IF_ERROR(backend_->RmsNorm({selected, weights_.final_norm, selected,
                                     static_cast<float>(config_.rms_norm_eps)}));
  return backend_->Gemm({selected, weights_.lm_head, out->view().Rows(0, n)});
}

absl::StatusOr<TensorView> LlamaModel::HeadLogits(TensorView hidden) {
  if (!has_head()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pipeline stage ", plan_.pp_rank, " holds no head (layers ", plan_.layer_begin, "..",
        plan_.layer_end - 1, "); ask for one with ModelOptions::head_after_layers"));
  }
  const int64_t n = hidden.dim(0);
  RETURN_IF_ERROR(exit_normed_.Resize({n, config_.hidden_size}));
  RETURN_IF_ERROR(exit_head_.Resize({n, plan_.vocab_rows}));
  const TensorView selected = exit_normed_.view();
  RETURN_IF_ERROR(backend_->RmsNorm({hidden, weights_.final_norm, selected,
                                     static_cast<float>(config_.rms_norm_eps)}));
  RETURN_IF_ERROR(backend_->Gemm({selected, weights_.lm_head, exit_head_.view()}));
  return exit_head_.view();
}

// head_ to host logits [rows, vocab_shard]; the last shard of a vocabulary that does not divide
// by tp is padded with -inf.
absl::Status LlamaModel::CopyLogits(const ForwardBatch& batch, Tensor* logits) {
  const int64_t rows = static_cast<int64_t>(batch.logit_rows.size());
  RETURN_IF_ERROR(logits->Resize({rows, plan_.vocab_shard}));
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = logits->data<float>() + r * plan_.vocab_shard;
    RETURN_IF_ERROR(backend_->CopyToHost(dst, head_.data<float>() + r * plan_.vocab_rows,
                                         plan_.vocab_rows * sizeof(float)));
    std::fill(dst + plan_.vocab_rows, dst + plan_.vocab_shard, -INFINITY);
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::EnableDecodeGraphs(bool enable) {
  if (!enable) {
    graphs_.reset();
    return absl::OkStatus();
  }
  if (!DecodeGraphs::Supported(*backend_)) {
    return absl::FailedPreconditionError(
        "CUDA graphs need the CUDA backend (--backend cuda in a CUDA build)");
  }
  graphs_ = std::make_unique<DecodeGraphs>(backend_->graph_capture());
  return absl::OkStatus();
}

// A step a graph can replay: one token per sequence, every row's logits, on one rank, with
// rotary frequencies that do not depend on the length.
bool LlamaModel::GraphEligible(const ForwardBatch& batch) const {
  if (graphs_ == nullptr || plan_.tp_size != 1 || plan_.pp_size != 1 || batch.first_layer > 0 ||
      batch.kv_only || batch.last_layer > 0 ||
      RopeDependsOnLength(config_) || !uniform_entries_ ||
      batch.logit_rows.size() != batch.tokens.size()) {
    return false;
  }
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    if (batch.logit_rows[i] != static_cast<int32_t>(i)) return false;
    for (size_t j = 0; j < i; ++j) {
      if (batch.slots[j] == batch.slots[i]) return false;  // two tokens of one sequence: prefill
    }
  }
  return true;
}

int LlamaModel::StageOf(int64_t layer) const {
  return StageOfLayer(config_, plan_.pp_size, parallel_.stage_layers, layer);
}

int64_t LlamaModel::LocalEnd(const ForwardBatch& batch) const {
  if (batch.last_layer <= 0) return plan_.layers();
  return std::clamp<int64_t>(batch.last_layer - plan_.layer_begin, 0, plan_.layers());
}

absl::Status LlamaModel::Resume(const ForwardBatch& batch, int64_t* first_local, bool* sent) {
  const int64_t n = static_cast<int64_t>(batch.tokens.size());
  RETURN_IF_ERROR(backend_->CopyWithinDevice(x_.view().data, batch.input.data,
                                             n * config_.hidden_size * sizeof(float)));
  *first_local = batch.first_layer - plan_.layer_begin;
  *sent = *first_local >= plan_.layers();
  if (!*sent) return absl::OkStatus();
  RETURN_IF_ERROR(backend_->Synchronize());  // the next stage starts at its first layer
  const StageHeader header{static_cast<int32_t>(n), batch.step, batch.micro_batch, 0, {}};
  return StageChannel(parallel_.pp).SendNext(header, x_.view());
}

// Everything a step enqueues on this rank, from the embedding (or the previous stage's
// activations) to the LM head's output in head_ (last stage, or an exit) or the send to the next
// stage, with the hooks called at their points.
absl::Status LlamaModel::Enqueue(const ForwardBatch& batch, KvCache& cache,
                                 const ForwardHooks& hooks, ForwardOutput* out) {
  running_ = &batch;
  subset_ = false;
  produced_logits_ = false;
  StageMessage message;
  LayerContext ctx{-1, -1, &plan_, running_, x_.view(), &cache, backend_, this, &message};
  int64_t first_local = 0;
  if (batch.first_layer > 0 && InputStage(batch) == plan_.pp_rank) {
    bool sent = false;
    RETURN_IF_ERROR(Resume(batch, &first_local, &sent));
    if (sent) return absl::OkStatus();
  } else if (plan_.first_stage()) {
    RETURN_IF_ERROR(backend_->Embedding({tokens_.view(), weights_.embed, x_.view(), plan_.vocab_begin}));
    if (plan_.tp_size > 1) {  // each rank embedded the ids of its vocabulary shard
      RETURN_IF_ERROR(backend_->Synchronize());
      RETURN_IF_ERROR(parallel_.tp->AllReduce(x_.view(), ReduceOp::kSum));
    }
    RETURN_IF_ERROR(EmbedExtensionRows());
    if (hooks.input != nullptr) RETURN_IF_ERROR(hooks.input->OnEmbeddings(ctx));
  } else {
    bool exited = false;
    RETURN_IF_ERROR(ReceiveFromPreviousStage(batch, cache, &message, &exited));
    if (exited) {
      out->exit_layer = message.exit_layer;
      out->message = message;
      return absl::OkStatus();
    }
  }
  const int64_t local_end = LocalEnd(batch);
  for (int64_t l = first_local; l < local_end; ++l) {
    ctx = LayerContext{plan_.layer_begin + l, l, &plan_, running_, x_.view(), &cache,
                       backend_, this, &message};
    AttentionVariant variant;
    const RowKeys* row_keys = nullptr;
    if (hooks.attention != nullptr) {
      ASSIGN_OR_RETURN(variant, hooks.attention->Variant(ctx));
      row_keys = hooks.attention->KeyVisibility(ctx);
      if (row_keys != nullptr) RETURN_IF_ERROR(CheckRowKeys(*row_keys, l));
    }
    RETURN_IF_ERROR(Layer(weights_.layers[l], ctx, variant, row_keys));
    if (hooks.layer == nullptr) continue;
    ctx.hidden = x_.view();
    ASSIGN_OR_RETURN(const LayerAction action, AfterLayer(hooks, ctx));
    if (action.kind == LayerAction::Kind::kExit) return ExitAt(l, cache, message, out);
    if (action.kind == LayerAction::Kind::kKeepRows) {
      RETURN_IF_ERROR(KeepRows(action.keep_rows, l + 1, cache));
      message.flags |= StageMessage::kRowSubset;
    }
  }
  out->message = message;
  if (batch.last_layer > 0 && batch.last_layer <= plan_.layer_end) {  // a layer range ends here
    out->hidden = x_.view().Rows(0, static_cast<int64_t>(running_->tokens.size()));
    return absl::OkStatus();
  }
  if (!plan_.last_stage()) {
    RETURN_IF_ERROR(backend_->Synchronize());
    StageHeader header{static_cast<int32_t>(running_->tokens.size()), batch.step,
                       batch.micro_batch, 0, message};
    return StageChannel(parallel_.pp).SendNext(
        header, x_.view(), subset_ ? absl::MakeConstSpan(active_rows_) : absl::Span<const int32_t>());
  }
  if (batch.kv_only) return absl::OkStatus();  // no logits
  produced_logits_ = true;
  return LmHead(*running_, x_.view(), rows_.view(), &head_);
}

absl::Status LlamaModel::Forward(const ForwardBatch& batch, KvCache& cache, Tensor* logits) {
  ASSIGN_OR_RETURN(const ForwardOutput out, Forward(batch, cache));
  if (!out.logits.empty()) RETURN_IF_ERROR(CopyLogits(batch, logits));
  return absl::OkStatus();
}

absl::StatusOr<ForwardOutput> LlamaModel::Forward(const ForwardBatch& batch, KvCache& cache,
                                                  const ForwardHooks& given_hooks) {
  ForwardHooks hooks = given_hooks;
  if (hooks.attention == nullptr) hooks.attention = attention_policy_;
  RETURN_IF_ERROR(CheckBatch(batch, cache));
  ForwardOutput out;
  // A resumed pass does nothing on the stages before the one holding its input.
  if (batch.first_layer > 0 && plan_.pp_rank < InputStage(batch)) return out;
  // A layer range does nothing on the stages after the one that ends it.
  if (batch.last_layer > 0 && plan_.pp_rank > StageOf(batch.last_layer - 1)) return out;
  base_lengths_.clear();
  for (int64_t l = 0; l < plan_.layers(); ++l) {
    for (int32_t slot : batch.slots) base_lengths_[{l, slot}] = cache.length(l, slot);
  }
  RETURN_IF_ERROR(ReserveEntries(
      batch, cache,
      std::clamp<int64_t>(batch.first_layer - plan_.layer_begin, 0, plan_.layers())));
  running_ = &batch;
  subset_ = false;
  produced_logits_ = false;
  if (hooks.any() || !GraphEligible(batch)) {
    RETURN_IF_ERROR(Prepare(batch, 0));
    RETURN_IF_ERROR(Enqueue(batch, cache, hooks, &out));
  } else {
    const DecodeGraphKey key{static_cast<int64_t>(batch.tokens.size()), cache.k(0).data,
                             cache.n_slots(), cache.max_seq()};
    RETURN_IF_ERROR(Prepare(batch, cache.n_slots()));
    if (graphs_->Has(key)) {
      RETURN_IF_ERROR(graphs_->Replay(key));
    } else {
      // The first step of this shape runs eagerly (sizing scratch), then is captured for the next.
      RETURN_IF_ERROR(Enqueue(batch, cache, hooks, &out));
      RETURN_IF_ERROR(backend_->Synchronize());
      RETURN_IF_ERROR(graphs_->Capture(key, [&] { return Enqueue(batch, cache, hooks, &out); }));
    }
    produced_logits_ = true;  // a graph step runs on a single rank: the last stage
  }
  if (!batch.persist_kv) {
    for (const auto& [key, base] : base_lengths_) {
      RETURN_IF_ERROR(cache.Truncate(key.first, key.second, base));
    }
  }
  if (hooks.kv != nullptr) RETURN_IF_ERROR(hooks.kv->AfterStep(batch, cache));
  RETURN_IF_ERROR(backend_->Synchronize());
  if (produced_logits_) {
    out.logits = head_.view().Rows(0, static_cast<int64_t>(running_->logit_rows.size()));
    if (subset_) {
      out.logit_rows = logit_map_;
    } else {
      out.logit_rows.resize(batch.logit_rows.size());
      std::iota(out.logit_rows.begin(), out.logit_rows.end(), 0);
    }
  }
  running_ = nullptr;
  return out;
}

}  // namespace tessera
