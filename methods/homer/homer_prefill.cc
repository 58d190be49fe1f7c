#include "methods/homer/homer_prefill.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/homer/key_score_policy.h"
#include "methods/homer/token_selection.h"

namespace tessera::homer {
// A tree node as every rank sees it (host bookkeeping, replicated), plus its hidden rows on the
// stage that ran its last layer.
struct HomerPrefill::Node {
  std::vector<int32_t> tokens, positions, source;
  std::vector<uint8_t> prunable;
  int32_t slot = -1;
  Tensor hidden;  // [rows, hidden_size] F32 after the node's last layer (that stage only)
  int64_t rows() const { return static_cast<int64_t>(tokens.size()); }
};

HomerPrefill::HomerPrefill(LlamaModel* model, PrefillOptions options)
    : model_(model),
      options_(std::move(options)),
      scores_(&model->backend(), DType::kF32),
      keep_device_(&model->backend(), DType::kI32) {
  options_.schedule.layers = model->config().num_hidden_layers;
}

int HomerPrefill::StageOf(int64_t layer) const {
  return StageOfLayer(model_->config(), model_->plan().pp_size, model_->parallel().stage_layers,
                      layer);
}

absl::Status HomerPrefill::EnsureCache(int64_t slots, int64_t capacity) {
  if (cache_ == nullptr || cache_->n_slots() < slots || cache_->max_seq() < capacity) {
    cache_.reset();
    ASSIGN_OR_RETURN(cache_, model_->MakeCache(slots, capacity));
  }
  cache_->ClearAll();
  free_slots_.clear();
  for (int32_t s = static_cast<int32_t>(cache_->n_slots()) - 1; s >= 0; --s) {
    free_slots_.push_back(s);
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> HomerPrefill::TakeSlot() {
  if (free_slots_.empty()) return absl::InternalError("HOMER: the tree cache has no free slot");
  const int32_t slot = free_slots_.back();
  free_slots_.pop_back();
  cache_->Clear(slot);
  return slot;
}

absl::StatusOr<PrefillResult> HomerPrefill::Run(const std::vector<int32_t>& tokens,
                                                int64_t prefix, int64_t suffix) {
  const int64_t total = static_cast<int64_t>(tokens.size());
  if (prefix < 0 || suffix < 0 || prefix + suffix > total) {
    return absl::InvalidArgumentError(absl::StrCat("HOMER: a prompt of ", total,
                                                   " tokens has no prefix of ", prefix,
                                                   " and suffix of ", suffix, " tokens"));
  }
  ASSIGN_OR_RETURN(schedule_,
                   MakeSchedule({prefix, total - prefix - suffix, suffix}, options_.schedule));
  if (options_.bias != nullptr && options_.bias->distances < options_.schedule.max_chunk_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HOMER: the bias table covers ", options_.bias->distances,
        " distances, fewer than max_chunk_len ", options_.schedule.max_chunk_len));
  }
  // A node holds at most max_chunk_len rows, unless nothing is pruned (tests).
  RETURN_IF_ERROR(EnsureCache(schedule_.height + 2,
                              options_.keep_all ? std::max(total, options_.schedule.max_chunk_len)
                                                : options_.schedule.max_chunk_len));
  tokens_ = &tokens;
  nodes_ = 0;
  PrefillResult result;
  result_ = &result;
  ASSIGN_OR_RETURN(Node root, Build(schedule_.height, 0, schedule_.RootTarget()));
  result_ = nullptr;
  result.schedule = schedule_;
  result.slot = root.slot;
  result.positions = root.positions;
  result.source = root.source;
  result.next_position = schedule_.NextPosition();
  result.nodes = nodes_;
  return result;
}

absl::StatusOr<HomerPrefill::Node> HomerPrefill::Build(int64_t level, int64_t first_leaf,
                                                       int64_t target) {
  const bool root = level == schedule_.height;
  if (level == 0) {
    ASSIGN_OR_RETURN(Node leaf, MakeLeaf(first_leaf));
    RETURN_IF_ERROR(RunNode(leaf, 0, target, root));
    return leaf;
  }
  const auto [left_target, right_target] = schedule_.ChildTargets(level, first_leaf);
  ASSIGN_OR_RETURN(Node left, Build(level - 1, first_leaf, left_target));
  ASSIGN_OR_RETURN(Node right,
                   Build(level - 1, first_leaf + (int64_t{1} << (level - 1)), right_target));
  ASSIGN_OR_RETURN(Node node, Merge(std::move(left), std::move(right), level));
  RETURN_IF_ERROR(RunNode(node, level, target, root));
  return node;
}

absl::StatusOr<HomerPrefill::Node> HomerPrefill::MakeLeaf(int64_t index) {
  const std::vector<int32_t>& t = *tokens_;
  const int64_t P = schedule_.shape.prefix, N = schedule_.shape.context,
                S = schedule_.shape.suffix;
  const int64_t begin = schedule_.ChunkBegin(index), end = schedule_.ChunkEnd(index);
  Node n;
  auto add = [&](int64_t source, int32_t position, bool prunable) {
    n.tokens.push_back(t[source]);
    n.positions.push_back(position);
    n.source.push_back(static_cast<int32_t>(source));
    n.prunable.push_back(prunable ? 1 : 0);
  };
  for (int64_t i = 0; i < P; ++i) add(i, static_cast<int32_t>(i), false);
  for (int64_t i = begin; i < end; ++i) add(P + i, static_cast<int32_t>(P + i - begin), true);
  // Every chunk's suffix takes the same positions, P + e + j (P + N + j with one chunk).
  const int64_t suffix_base = P + (schedule_.chunks == 1 ? N : schedule_.slice);
  for (int64_t j = 0; j < S; ++j) add(P + N + j, static_cast<int32_t>(suffix_base + j), false);
  ASSIGN_OR_RETURN(n.slot, TakeSlot());
  return n;
}

absl::Status HomerPrefill::RunNode(Node& node, int64_t level, int64_t target, bool root) {
  const int64_t first = schedule_.FirstLayer(level), end = schedule_.EndLayer(level);
  const int64_t rows = node.rows();
  const bool prune = rows > target && !options_.keep_all;
  ++nodes_;
  if (first < end) {
    ForwardBatch batch;
    batch.tokens = node.tokens;
    batch.positions = node.positions;
    batch.slots.assign(rows, node.slot);
    batch.first_layer = first;
    if (first > 0 && StageOf(first - 1) == pp_rank()) batch.input = node.hidden.view();
    if (root) {
      batch.logit_rows = {static_cast<int32_t>(rows - 1)};
    } else {
      batch.last_layer = end;
    }
    ForwardHooks hooks;
    std::unique_ptr<KeyScorePolicy> scoring;
    if (prune) {  // the scores of the node's last layer
      RETURN_IF_ERROR(scores_.Resize({1, rows}));
      scoring = std::make_unique<KeyScorePolicy>(model_->attention_policy(), end - 1,
                                                 scores_.view());
      hooks.attention = scoring.get();
    }
    ASSIGN_OR_RETURN(ForwardOutput out, model_->Forward(batch, *cache_, hooks));
    if (root) {
      result_->logits = out.logits;
    } else if (HoldsOutput(end)) {
      if (node.hidden.view().rank == 0) node.hidden = Tensor(&model_->backend(), DType::kF32);
      RETURN_IF_ERROR(node.hidden.Resize({rows, model_->config().hidden_size}));
      RETURN_IF_ERROR(model_->backend().CopyWithinDevice(node.hidden.view().data,
                                                         out.hidden.data, out.hidden.bytes()));
    }
  }
  if (!prune) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::vector<int32_t> keep, DecideKeep(node, end, target));
  return Prune(node, keep, end, root);
}

absl::StatusOr<std::vector<int32_t>> HomerPrefill::DecideKeep(const Node& node, int64_t end_layer,
                                                              int64_t target) {
  const ModelParallelism& par = model_->parallel();
  const int owner = StageOf(end_layer - 1);
  std::vector<int32_t> keep;
  if (owner == pp_rank()) {
    // The MAX over every head of the model: exact and order-free, so every rank of the
    // tensor-parallel group holds the same bits and takes the same rows.
    if (model_->plan().tp_size > 1) RETURN_IF_ERROR(par.tp->AllReduce(scores_.view(), ReduceOp::kMax));
    std::vector<float> raw(node.rows());
    RETURN_IF_ERROR(model_->backend().CopyToHost(raw.data(), scores_.view().data,
                                                 raw.size() * sizeof(float)));
    ASSIGN_OR_RETURN(keep, SelectKeep(raw, node.positions, node.prunable, options_.bias,
                                      end_layer - 1, target));
  }
  if (model_->plan().pp_size > 1) {  // the deciding stage tells the others
    int32_t count = static_cast<int32_t>(keep.size());
    RETURN_IF_ERROR(par.pp->Broadcast(TensorView::Of(&count, DType::kI32, {1}), owner));
    keep.resize(count);
    RETURN_IF_ERROR(par.pp->Broadcast(TensorView::Of(keep.data(), DType::kI32, {count}), owner));
  }
  return keep;
}

absl::Status HomerPrefill::Prune(Node& node, const std::vector<int32_t>& keep, int64_t end_layer,
                                 bool root) {
  const ShardPlan& plan = model_->plan();
  // Propagative refinement: every layer the node holds drops the same rows.
  for (int64_t l = 0; l < plan.layers() && plan.layer_begin + l < end_layer; ++l) {
    RETURN_IF_ERROR(cache_->Compact(l, node.slot, keep));
  }
  auto select = [&](auto& values) {
    std::remove_reference_t<decltype(values)> kept;
    for (int32_t r : keep) kept.push_back(values[r]);
    values = std::move(kept);
  };
  select(node.tokens);
  select(node.positions);
  select(node.source);
  select(node.prunable);
  if (root || !HoldsOutput(end_layer)) return absl::OkStatus();
  Backend& be = model_->backend();
  const int64_t count = static_cast<int64_t>(keep.size());
  RETURN_IF_ERROR(keep_device_.Resize({count}));
  RETURN_IF_ERROR(be.CopyToDevice(keep_device_.view().data, keep.data(), count * sizeof(int32_t)));
  Tensor kept(&be, DType::kF32);
  RETURN_IF_ERROR(kept.Resize({count, model_->config().hidden_size}));
  RETURN_IF_ERROR(be.GatherRows({node.hidden.view(), keep_device_.view(), kept.view()}));
  RETURN_IF_ERROR(be.Synchronize());
  node.hidden = std::move(kept);
  return absl::OkStatus();
}

absl::StatusOr<HomerPrefill::Node> HomerPrefill::Merge(Node a, Node b, int64_t level) {
  const int64_t P = schedule_.shape.prefix, S = schedule_.shape.suffix;
  const int32_t la = static_cast<int32_t>(a.rows()), lb = static_cast<int32_t>(b.rows());
  const int64_t at = schedule_.FirstLayer(level);  // the merge is the input of this layer
  // K/V of the layers below: b's suffix rows become the mean of both copies, then b's context
  // and suffix follow a's context in a's slot. The prefix is a's (both copies are equal).
  const ShardPlan& plan = model_->plan();
  for (int64_t l = 0; l < plan.layers() && plan.layer_begin + l < at; ++l) {
    RETURN_IF_ERROR(cache_->AverageEntries(l, b.slot, lb - S, a.slot, la - S, S));
    RETURN_IF_ERROR(cache_->CopyEntries(*cache_, l, b.slot, P, lb - P, a.slot, la - S));
  }
  Node m;
  m.slot = a.slot;
  auto join = [&](const auto& x, const auto& y, auto& out) {
    out.assign(x.begin(), x.end() - S);
    out.insert(out.end(), y.begin() + P, y.end());
  };
  join(a.tokens, b.tokens, m.tokens);
  join(a.positions, b.positions, m.positions);
  join(a.source, b.source, m.source);
  join(a.prunable, b.prunable, m.prunable);
  if (at > 0 && StageOf(at - 1) == pp_rank()) {  // this stage holds both children's hidden rows
    Backend& be = model_->backend();
    const int64_t width = model_->config().hidden_size;
    const TensorView ha = a.hidden.view(), hb = b.hidden.view();
    RETURN_IF_ERROR(be.Average({hb.Rows(lb - S, lb), ha.Rows(la - S, la), hb.Rows(lb - S, lb)}));
    m.hidden = Tensor(&be, DType::kF32);
    RETURN_IF_ERROR(m.hidden.Resize({m.rows(), width}));
    const TensorView hm = m.hidden.view();
    RETURN_IF_ERROR(be.CopyWithinDevice(hm.data, ha.data, ha.Rows(0, la - S).bytes()));
    RETURN_IF_ERROR(be.CopyWithinDevice(hm.Rows(la - S, m.rows()).data, hb.Rows(P, lb).data,
                                        hb.Rows(P, lb).bytes()));
    RETURN_IF_ERROR(be.Synchronize());
  }
  cache_->Clear(b.slot);
  free_slots_.push_back(b.slot);
  return m;
}

absl::Status HomerPrefill::CopyInto(const PrefillResult& result, KvCache& dst, int32_t slot) {
  for (int64_t l = 0; l < cache_->layers(); ++l) {
    RETURN_IF_ERROR(dst.CopyEntries(*cache_, l, result.slot, 0,
                                    cache_->length(l, result.slot), slot, 0));
  }
  return model_->backend().Synchronize();
}

}  // namespace tessera::homer
