// LlamaModel: extension rows (ModelOptions::extension: their own embedding and projections,
// merged into the batch's rows), moved keys (ForwardBatch::key_positions) and RowKeys rows (a
// prefix attention merged with an attention over a scratch cache of the other keys they see).
#include <algorithm>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"

namespace tessera {

absl::Status LlamaModel::ResolveExtension() {
  const ExtensionTokens& ext = options_.extension;
  if (ext.count == 0) return absl::OkStatus();
  auto declared = [&](const std::string& name) {
    for (const ExtraWeight& w : options_.extra_weights) {
      if (w.name == name) return true;
    }
    return false;
  };
  for (const std::string* name : {&ext.embedding, &ext.q, &ext.k, &ext.v, &ext.o}) {
    if (!name->empty() && !declared(*name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ModelOptions::extension names ", *name, ", which is not one of the extra weights"));
    }
  }
  if (ext.fallback_token < 0 || ext.fallback_token >= config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("ModelOptions::extension: fallback token ",
                                                   ext.fallback_token, " is not in the vocabulary"));
  }
  auto find = [&](const std::string& pattern, int64_t layer) {
    if (pattern.empty()) return TensorView();
    const std::string name = absl::StrReplaceAll(pattern, {{"{layer}", absl::StrCat(layer)}});
    auto it = weights_.extra.find(name);
    return it == weights_.extra.end() ? TensorView() : it->second;
  };
  ext_embed_ = plan_.first_stage() ? find(ext.embedding, 0) : TensorView();
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    LayerWeights& w = weights_.layers[l];
    const int64_t layer = plan_.layer_begin + static_cast<int64_t>(l);
    w.ext_wq = find(ext.q, layer);
    w.ext_wk = find(ext.k, layer);
    w.ext_wv = find(ext.v, layer);
    w.ext_wo = find(ext.o, layer);
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::UploadExtensionRows(const ForwardBatch& batch) {
  ext_rows_host_.clear();
  const int64_t n = static_cast<int64_t>(batch.tokens.size());
  std::vector<int32_t> ids = batch.tokens, map(n), table_rows;
  for (int64_t i = 0; i < n; ++i) {
    map[i] = static_cast<int32_t>(i);
    if (batch.tokens[i] < config_.vocab_size) continue;
    map[i] = static_cast<int32_t>(n + ext_rows_host_.size());
    ext_rows_host_.push_back(static_cast<int32_t>(i));
    table_rows.push_back(static_cast<int32_t>(batch.tokens[i] - config_.vocab_size));
    // The lookup embeds the fallback token; EmbedExtensionRows then puts the table's row there
    // when there is a table.
    ids[i] = options_.extension.fallback_token;
  }
  RETURN_IF_ERROR(Upload(ids, &tokens_));
  if (ext_rows_host_.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(Upload(ext_rows_host_, &ext_rows_));
  RETURN_IF_ERROR(Upload(map, &ext_map_));
  return Upload(table_rows, &ext_ids_);
}

absl::Status LlamaModel::MergeRows(TensorView target, TensorView rows, TensorView map) {
  const int64_t n = target.dim(0), m = rows.dim(0), width = target.dim(1);
  RETURN_IF_ERROR(ext_cat_.Resize({n + m, width}));
  const TensorView cat = ext_cat_.view();
  RETURN_IF_ERROR(backend_->CopyWithinDevice(cat.data, target.data, target.bytes()));
  RETURN_IF_ERROR(backend_->CopyWithinDevice(cat.Rows(n, n + m).data, rows.data, rows.bytes()));
  return backend_->Embedding({map, cat, target});
}

absl::Status LlamaModel::EmbedExtensionRows() {
  if (ext_rows_host_.empty() || ext_embed_.empty()) return absl::OkStatus();
  const int64_t m = static_cast<int64_t>(ext_rows_host_.size());
  RETURN_IF_ERROR(ext_in_.Resize({m, config_.hidden_size}));
  RETURN_IF_ERROR(backend_->Embedding({ext_ids_.view(), ext_embed_, ext_in_.view()}));
  return MergeRows(x_.view(), ext_in_.view(), ext_map_.view());
}

absl::Status LlamaModel::GatherExtensionRows(TensorView in) {
  if (ext_rows_host_.empty()) return absl::OkStatus();
  const int64_t m = static_cast<int64_t>(ext_rows_host_.size());
  RETURN_IF_ERROR(ext_in_.Resize({m, in.dim(1)}));
  return backend_->Embedding({ext_rows_.view(), in, ext_in_.view()});
}

absl::Status LlamaModel::ProjectExtensionRows(TensorView w, TensorView out) {
  if (w.empty() || ext_rows_host_.empty()) return absl::OkStatus();
  const int64_t m = static_cast<int64_t>(ext_rows_host_.size());
  // The projected rows go to the scratch's tail, then the merge gathers them in place.
  const int64_t n = out.dim(0), width = out.dim(1);
  RETURN_IF_ERROR(ext_cat_.Resize({n + m, width}));
  const TensorView cat = ext_cat_.view();
  RETURN_IF_ERROR(backend_->Gemm({ext_in_.view(), w, cat.Rows(n, n + m)}));
  RETURN_IF_ERROR(backend_->CopyWithinDevice(cat.data, out.data, out.bytes()));
  return backend_->Embedding({ext_map_.view(), cat, out});
}

absl::Status LlamaModel::RotateKeysAtKeyPositions(TensorView k_alt) {
  return backend_->Rope({k_alt, key_positions_.view(), inv_freq_.view(), attention_scaling_});
}

absl::Status LlamaModel::CheckRowKeys(const RowKeys& rk, int64_t layer) const {
  if (rk.empty()) return absl::OkStatus();
  const size_t m = rk.rows.size();
  const int64_t n = static_cast<int64_t>(running_->tokens.size());
  if (rk.prefix_end.size() != m || rk.extra_begin.size() != m + 1 || rk.extra_begin[0] != 0 ||
      rk.extra_begin[m] != static_cast<int32_t>(rk.extra.size())) {
    return absl::InvalidArgumentError("RowKeys: rows, prefix_end and extra_begin disagree");
  }
  if (m > 0 && subset_) {
    return absl::UnimplementedError("RowKeys with a row subset (KeepRows)");
  }
  const int64_t offset = uniform_entries_ ? 0 : layer * n;  // into entries_host_
  for (size_t j = 0; j < m; ++j) {
    const int32_t row = rk.rows[j];
    if (row < 0 || row >= n || (j > 0 && row <= rk.rows[j - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("RowKeys: row ", row, " is out of order"));
    }
    const int32_t own = entries_host_[offset + row];
    if (rk.prefix_end[j] < 0 || rk.prefix_end[j] > own) {
      return absl::InvalidArgumentError(absl::StrCat("RowKeys: row ", row, " prefix_end ",
                                                     rk.prefix_end[j], " is past its entry ", own));
    }
    int32_t last = rk.prefix_end[j] - 1;
    for (int32_t e = rk.extra_begin[j]; e < rk.extra_begin[j + 1]; ++e) {
      if (rk.extra[e] <= last || rk.extra[e] >= own) {
        return absl::InvalidArgumentError(absl::StrCat(
            "RowKeys: row ", row, "'s extra entries must increase from its prefix and stay "
            "below its own entry ", own));
      }
      last = rk.extra[e];
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::AttendRowKeys(const RowKeys& rk, const LayerContext& ctx, TensorView q,
                                       TensorView k, TensorView v, TensorView attn, float scale) {
  if (row_key_buffers_ == nullptr) {
    row_key_buffers_ = std::make_unique<RowKeyBuffers>();
    RowKeyBuffers& b = *row_key_buffers_;
    for (Tensor* t : {&b.rows, &b.prefix_entries, &b.prefix_slots, &b.own_slots, &b.own_entries,
                      &b.gather, &b.lse_map, &b.attn_map}) {
      *t = Tensor(backend_, DType::kI32);
    }
    for (Tensor* t : {&b.q, &b.k, &b.v, &b.out_a, &b.lse_a, &b.out_b, &b.lse_b, &b.lse_cat,
                      &b.out_cat}) {
      *t = Tensor(backend_, DType::kF32);
    }
    b.k_cache = Tensor(backend_, ctx.cache->dtype());
    b.v_cache = Tensor(backend_, ctx.cache->dtype());
  }
  RowKeyBuffers& b = *row_key_buffers_;
  KvCache& cache = *ctx.cache;
  RETURN_IF_ERROR(backend_->Synchronize());  // the previous layer may still read the uploads
  const int64_t n = q.dim(0), heads = q.dim(1), head_dim = q.dim(2), kv_heads = k.dim(1);
  const int64_t m = static_cast<int64_t>(rk.rows.size());
  int64_t most = 0;  // the most extra keys of one row
  for (int64_t j = 0; j < m; ++j) most = std::max<int64_t>(most, rk.extra_begin[j + 1] - rk.extra_begin[j]);
  const int64_t capacity = most + 1;
  std::vector<int32_t> prefix_entries(m), prefix_slots(m), own_slots(m), own_entries(m),
      lse_map(m), attn_map(n), gather(m * capacity, 0);
  std::iota(attn_map.begin(), attn_map.end(), 0);
  bool any_prefix = false;
  for (int64_t j = 0; j < m; ++j) {
    const int32_t row = rk.rows[j], slot = ctx.batch->slots[row];
    const bool prefix = rk.prefix_end[j] > 0;
    any_prefix |= prefix;
    prefix_entries[j] = prefix ? rk.prefix_end[j] - 1 : 0;
    prefix_slots[j] = slot;
    lse_map[j] = static_cast<int32_t>(prefix ? j : m);  // row m of lse_cat is -inf
    own_slots[j] = static_cast<int32_t>(j);
    own_entries[j] = rk.extra_begin[j + 1] - rk.extra_begin[j];
    for (int32_t e = rk.extra_begin[j]; e < rk.extra_begin[j + 1]; ++e) {
      gather[j * capacity + (e - rk.extra_begin[j])] =
          static_cast<int32_t>(slot * cache.max_seq() + rk.extra[e]);
    }
    attn_map[row] = static_cast<int32_t>(n + j);
  }
  RETURN_IF_ERROR(Upload(rk.rows, &b.rows));
  RETURN_IF_ERROR(Upload(own_slots, &b.own_slots));
  RETURN_IF_ERROR(Upload(own_entries, &b.own_entries));
  RETURN_IF_ERROR(Upload(attn_map, &b.attn_map));
  // The rows' queries, and their own keys and values at the query position.
  const int64_t qw = heads * head_dim, kw = kv_heads * head_dim;
  RETURN_IF_ERROR(b.q.Resize({m, qw}));
  RETURN_IF_ERROR(b.k.Resize({m, kw}));
  RETURN_IF_ERROR(b.v.Resize({m, kw}));
  RETURN_IF_ERROR(backend_->Embedding({b.rows.view(), q.Reshaped({n, qw}), b.q.view()}));
  RETURN_IF_ERROR(backend_->Embedding({b.rows.view(), k.Reshaped({n, kw}), b.k.view()}));
  RETURN_IF_ERROR(backend_->Embedding({b.rows.view(), v.Reshaped({n, kw}), b.v.view()}));
  const TensorView qm = b.q.view().Reshaped({m, heads, head_dim});
  // The scratch cache: slot j holds row j's extra keys, then its own.
  const DType dtype = cache.dtype();
  if (b.k_cache.view().dtype != dtype) {
    b.k_cache = Tensor(backend_, dtype);
    b.v_cache = Tensor(backend_, dtype);
  }
  RETURN_IF_ERROR(b.k_cache.Resize({m, capacity, kv_heads, head_dim}));
  RETURN_IF_ERROR(b.v_cache.Resize({m, capacity, kv_heads, head_dim}));
  const int64_t layer = ctx.local_layer;
  if (most > 0) {
    RETURN_IF_ERROR(Upload(gather, &b.gather));
    const int64_t flat = cache.n_slots() * cache.max_seq();
    for (auto [from, to] : {std::pair{cache.k(layer), b.k_cache.view()},
                            std::pair{cache.v(layer), b.v_cache.view()}}) {
      RETURN_IF_ERROR(backend_->GatherRows({from.Reshaped({flat, kv_heads, head_dim}), b.gather.view(),
                                            to.Reshaped({m * capacity, kv_heads, head_dim})}));
    }
  }
  RETURN_IF_ERROR(backend_->KvWrite({b.k.view().Reshaped({m, kv_heads, head_dim}),
                                     b.v.view().Reshaped({m, kv_heads, head_dim}),
                                     b.k_cache.view(), b.v_cache.view(), b.own_slots.view(),
                                     b.own_entries.view()}));
  RETURN_IF_ERROR(b.out_b.Resize({m, qw}));
  RETURN_IF_ERROR(b.lse_b.Resize({m, heads}));
  const TensorView out_b = b.out_b.view().Reshaped({m, heads, head_dim});
  AttentionArgs own{qm, b.k_cache.view(), b.v_cache.view(), b.own_slots.view(),
                    b.own_entries.view(), out_b, b.lse_b.view()};
  own.scale = scale;
  RETURN_IF_ERROR(backend_->Attention(own));
  TensorView result = b.out_b.view();
  if (any_prefix) {
    RETURN_IF_ERROR(Upload(prefix_entries, &b.prefix_entries));
    RETURN_IF_ERROR(Upload(prefix_slots, &b.prefix_slots));
    RETURN_IF_ERROR(Upload(lse_map, &b.lse_map));
    RETURN_IF_ERROR(b.out_a.Resize({m, qw}));
    RETURN_IF_ERROR(b.lse_a.Resize({m, heads}));
    const TensorView out_a = b.out_a.view().Reshaped({m, heads, head_dim});
    AttentionArgs prefix{qm, cache.k(layer), cache.v(layer), b.prefix_slots.view(),
                         b.prefix_entries.view(), out_a, b.lse_a.view()};
    prefix.scale = scale;
    RETURN_IF_ERROR(backend_->Attention(prefix));
    // Rows without a prefix: its log-sum-exp becomes -inf (weight 0 in the merge).
    RETURN_IF_ERROR(b.lse_cat.Resize({m + 1, heads}));
    RETURN_IF_ERROR(backend_->CopyWithinDevice(b.lse_cat.view().data, b.lse_a.view().data,
                                               b.lse_a.view().bytes()));
    const std::vector<float> minus_inf(heads, -std::numeric_limits<float>::infinity());
    RETURN_IF_ERROR(backend_->CopyToDevice(b.lse_cat.view().Rows(m, m + 1).data, minus_inf.data(),
                                           heads * sizeof(float)));
    RETURN_IF_ERROR(backend_->Embedding({b.lse_map.view(), b.lse_cat.view(), b.lse_a.view()}));
    RETURN_IF_ERROR(backend_->MergeAttention(
        {out_a, b.lse_a.view(), out_b, b.lse_b.view(), out_a, b.lse_a.view()}));
    result = b.out_a.view();
  }
  return MergeRows(attn.Reshaped({n, qw}), result, b.attn_map.view());
}

}  // namespace tessera
