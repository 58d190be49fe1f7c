// LlamaModel: the parts of the forward pass that methods steer through ForwardHooks: the
// after-layer decision and its agreement check, keeping a subset of the rows, exits, and the
// control message between pipeline stages.
#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"

namespace tessera {
namespace {

const char* ActionName(int32_t kind) {
  switch (static_cast<LayerAction::Kind>(kind)) {
    case LayerAction::Kind::kContinue:
      return "continue";
    case LayerAction::Kind::kExit:
      return "exit";
    case LayerAction::Kind::kKeepRows:
      return "keep rows";
  }
  return "?";
}

// FNV-1a over the kept rows: ranks that keep different rows disagree.
int32_t RowsHash(const std::vector<int32_t>& rows) {
  uint32_t h = 2166136261u;
  for (int32_t r : rows) h = (h ^ static_cast<uint32_t>(r)) * 16777619u;
  return static_cast<int32_t>(h);
}

}  // namespace

absl::StatusOr<LayerAction> LlamaModel::AfterLayer(const ForwardHooks& hooks,
                                                   const LayerContext& ctx) {
  ASSIGN_OR_RETURN(LayerAction action, hooks.layer->AfterLayer(ctx));
  if (hooks.check_agreement && plan_.tp_size > 1) {
    // Every rank gathers every rank's decision, so every rank sees the same disagreement and
    // fails the same step: no rank is left waiting in a collective the others skipped.
    const int n = plan_.tp_size;
    int32_t mine[2] = {static_cast<int32_t>(action.kind), RowsHash(action.keep_rows)};
    std::vector<int32_t> all(2 * n);
    RETURN_IF_ERROR(parallel_.tp->AllGather(TensorView::Of(mine, DType::kI32, {2}),
                                            TensorView::Of(all.data(), DType::kI32, {n, 2})));
    bool agree = true;
    for (int r = 1; r < n; ++r) agree = agree && all[2 * r] == all[0] && all[2 * r + 1] == all[1];
    if (!agree) {
      std::vector<std::string> each;
      for (int r = 0; r < n; ++r) {
        each.push_back(absl::StrCat("tp rank ", r, ": ", ActionName(all[2 * r]),
                                    all[2 * r] == static_cast<int32_t>(LayerAction::Kind::kKeepRows)
                                        ? absl::StrCat(" (rows hash ", all[2 * r + 1], ")")
                                        : ""));
      }
      return absl::InternalError(absl::StrCat(
          "step ", ctx.batch->step, " micro-batch ", ctx.batch->micro_batch, " layer ", ctx.layer,
          " (pipeline stage ", plan_.pp_rank, "): the tensor-parallel ranks took different "
          "after-layer decisions: ", absl::StrJoin(each, ", "),
          "; a hook must decide from data identical on every rank (reduced statistics)"));
    }
  }
  if (action.kind == LayerAction::Kind::kKeepRows) {
    const int64_t n = static_cast<int64_t>(running_->tokens.size());
    for (size_t i = 0; i < action.keep_rows.size(); ++i) {
      const int32_t r = action.keep_rows[i];
      if (r < 0 || r >= n || (i > 0 && r <= action.keep_rows[i - 1])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "layer ", ctx.layer, ": a hook kept rows that are not strictly increasing indices "
            "into the ", n, " running rows (element ", i, " is ", r, ")"));
      }
    }
  }
  return action;
}

absl::Status LlamaModel::NarrowTo(const std::vector<int32_t>& keep, int64_t from, KvCache& cache) {
  const ForwardBatch& b = *running_;
  if (!subset_) {  // the batch's own rows so far
    active_rows_.resize(b.tokens.size());
    std::iota(active_rows_.begin(), active_rows_.end(), 0);
    logit_map_.resize(b.logit_rows.size());
    std::iota(logit_map_.begin(), logit_map_.end(), 0);
  }
  ForwardBatch next;
  next.step = b.step;
  next.micro_batch = b.micro_batch;
  std::vector<int32_t> rows, new_index(b.tokens.size(), -1), logit_map;
  for (size_t i = 0; i < keep.size(); ++i) {
    const int32_t r = keep[i];
    new_index[r] = static_cast<int32_t>(i);
    next.tokens.push_back(b.tokens[r]);
    next.positions.push_back(b.positions[r]);
    next.slots.push_back(b.slots[r]);
    rows.push_back(active_rows_[r]);
  }
  for (size_t j = 0; j < b.logit_rows.size(); ++j) {  // logits only for rows still running
    if (new_index[b.logit_rows[j]] < 0) continue;
    next.logit_rows.push_back(new_index[b.logit_rows[j]]);
    logit_map.push_back(logit_map_[j]);
  }
  active_ = std::move(next);
  active_rows_ = std::move(rows);
  logit_map_ = std::move(logit_map);
  running_ = &active_;
  subset_ = true;
  RETURN_IF_ERROR(ReserveEntries(active_, cache, from));
  // The previous layers' ops may still read the index buffers on a device backend.
  RETURN_IF_ERROR(backend_->Synchronize());
  RETURN_IF_ERROR(ResizeActivations(static_cast<int64_t>(active_.tokens.size()),
                                    static_cast<int64_t>(active_.logit_rows.size())));
  return UploadBatch(active_);
}

absl::Status LlamaModel::KeepRows(const std::vector<int32_t>& keep, int64_t from, KvCache& cache) {
  if (!running_->key_positions.empty() || !ext_rows_host_.empty()) {
    return absl::UnimplementedError(
        "a hook kept a subset of rows in a pass with key positions or extension rows");
  }
  const int64_t m = static_cast<int64_t>(keep.size()), dim = config_.hidden_size;
  if (m > 0) {  // x_ rows keep -> h_ -> x_ rows [0, m)
    RETURN_IF_ERROR(backend_->Synchronize());
    RETURN_IF_ERROR(keep_rows_.Resize({m}));
    RETURN_IF_ERROR(backend_->CopyToDevice(keep_rows_.view().data, keep.data(), m * 4));
    RETURN_IF_ERROR(backend_->GatherRows({x_.view(), keep_rows_.view(), h_.view().Rows(0, m)}));
    RETURN_IF_ERROR(backend_->CopyWithinDevice(x_.view().data, h_.view().data, m * dim * 4));
  }
  return NarrowTo(keep, from, cache);
}

absl::Status LlamaModel::ExitAt(int64_t local_layer, KvCache& cache, StageMessage& message,
                              ForwardOutput* out) {
  const int64_t layer = plan_.layer_begin + local_layer;
  if (!has_head()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a hook ended the pass after layer ", layer, " on pipeline stage ", plan_.pp_rank,
        ", which holds no head; list the layer in ModelOptions::head_after_layers"));
  }
  for (const auto& [key, base] : base_lengths_) {  // the later layers write no K/V
    if (key.first > local_layer) RETURN_IF_ERROR(cache.Truncate(key.first, key.second, base));
  }
  message.flags |= StageMessage::kExited;
  message.exit_layer = static_cast<int32_t>(layer);
  out->exit_layer = layer;
  out->message = message;
  produced_logits_ = true;
  RETURN_IF_ERROR(LmHead(*running_, x_.view(), rows_.view(), &head_));
  if (plan_.last_stage()) return absl::OkStatus();
  RETURN_IF_ERROR(backend_->Synchronize());
  const StageHeader header{0, running_->step, running_->micro_batch, 0, message};
  return StageChannel(parallel_.pp).SendNext(header, TensorView());
}

absl::Status LlamaModel::ReceiveFromPreviousStage(const ForwardBatch& batch, KvCache& cache,
                                                  StageMessage* message, bool* exited) {
  StageChannel channel(parallel_.pp);
  ASSIGN_OR_RETURN(const StageHeader header,
                   channel.RecvHeader(batch.step, batch.micro_batch, config_.hidden_size));
  *message = header.message;
  *exited = (message->flags & StageMessage::kExited) != 0;
  if (*exited) {  // nothing runs here; the later stages learn of the exit too
    for (int64_t l = 0; l < plan_.layers(); ++l) {  // and no K/V is written
      for (int32_t slot : batch.slots) {
        RETURN_IF_ERROR(cache.Truncate(l, slot, base_lengths_.at({l, slot})));
      }
    }
    if (plan_.last_stage()) return absl::OkStatus();
    return channel.SendNext(header, TensorView());
  }
  std::vector<int32_t> rows;
  RETURN_IF_ERROR(channel.RecvRows(header, &rows));
  if ((message->flags & StageMessage::kRowSubset) != 0) {
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || rows[i] >= static_cast<int32_t>(batch.tokens.size()) ||
          (i > 0 && rows[i] <= rows[i - 1])) {
        return absl::InternalError(absl::StrCat("pipeline stage ", plan_.pp_rank,
                                                " received a bad row subset from stage ",
                                                plan_.pp_rank - 1));
      }
    }
    RETURN_IF_ERROR(NarrowTo(rows, 0, cache));
  } else if (header.n_tokens != static_cast<int32_t>(batch.tokens.size())) {
    return absl::InternalError(absl::StrCat(
        "pipeline stage ", plan_.pp_rank, " expected ", batch.tokens.size(), " rows of step ",
        batch.step, " but stage ", plan_.pp_rank - 1, " sent ", header.n_tokens));
  }
  return channel.RecvPayload(header, x_.view());
}

}  // namespace tessera
