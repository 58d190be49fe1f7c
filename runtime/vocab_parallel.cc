#include "runtime/vocab_parallel.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::StatusOr<std::vector<int32_t>> VocabParallelArgMax(Communicator* tp, const ShardPlan& plan,
                                                         const Tensor& local) {
  CpuBackend backend;  // the logits are in host memory
  const int64_t rows = local.dim(0);
  // (value, index) pairs as two F32 words per row; ids below 2^24 are exact in F32.
  Tensor values(DType::kF32, {rows}), indices(DType::kI32, {rows});
  RETURN_IF_ERROR(backend.ArgMax({local.view(), values.view(), indices.view(), plan.vocab_begin}));
  std::vector<int32_t> best(indices.data<int32_t>(), indices.data<int32_t>() + rows);
  if (tp == nullptr || tp->size() == 1) return best;
  const int n = tp->size();
  Tensor all_values(DType::kF32, {n, rows}), all_indices(DType::kI32, {n, rows});
  RETURN_IF_ERROR(tp->AllGather(values.view(), all_values.view()));
  RETURN_IF_ERROR(tp->AllGather(indices.view(), all_indices.view()));
  for (int64_t r = 0; r < rows; ++r) {
    float best_value = all_values.data<float>()[r];
    best[r] = all_indices.data<int32_t>()[r];
    for (int s = 1; s < n; ++s) {  // shards in vocabulary order: strict > keeps the lowest id
      const float v = all_values.data<float>()[s * rows + r];
      if (v > best_value) {
        best_value = v;
        best[r] = all_indices.data<int32_t>()[s * rows + r];
      }
    }
  }
  return best;
}

absl::StatusOr<std::vector<TokenLogProb>> VocabParallelLogProbs(
    Communicator* tp, const ShardPlan& plan, const Tensor& local,
    const std::vector<int32_t>& targets) {
  CpuBackend backend;  // the logits are in host memory
  const int64_t rows = local.dim(0), width = local.dim(1);
  if (static_cast<int64_t>(targets.size()) != rows) {
    return absl::InvalidArgumentError("VocabParallelLogProbs: one target per row");
  }
  Tensor max(DType::kF32, {rows}), sum(DType::kF32, {rows}), sum_x(DType::kF32, {rows});
  RETURN_IF_ERROR(backend.SoftmaxStats({local.view(), max.view(), sum.view(), sum_x.view()}));
  // Rebase every shard's sum to the global max: one max all-reduce, one sum all-reduce, and one
  // sum all-reduce carrying the target logit (held by exactly one shard).
  Tensor global_max(DType::kF32, {rows});
  std::memcpy(global_max.data<float>(), max.data<float>(), rows * sizeof(float));
  if (tp != nullptr) RETURN_IF_ERROR(tp->AllReduce(global_max.view(), ReduceOp::kMax));
  Tensor packed(DType::kF32, {rows, 2});  // (rebased sum, target logit or 0)
  for (int64_t r = 0; r < rows; ++r) {
    packed.data<float>()[2 * r] =
        sum.data<float>()[r] * std::exp(max.data<float>()[r] - global_max.data<float>()[r]);
    const int64_t local_id = targets[r] - plan.vocab_begin;
    packed.data<float>()[2 * r + 1] =
        (local_id >= 0 && local_id < plan.vocab_rows) ? local.data<float>()[r * width + local_id] : 0.0f;
  }
  if (tp != nullptr) RETURN_IF_ERROR(tp->AllReduce(packed.view(), ReduceOp::kSum));
  ASSIGN_OR_RETURN(std::vector<int32_t> argmax, VocabParallelArgMax(tp, plan, local));
  std::vector<TokenLogProb> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    out[r].logprob = packed.data<float>()[2 * r + 1] - global_max.data<float>()[r] -
                     std::log(static_cast<double>(packed.data<float>()[2 * r]));
    out[r].is_greedy = argmax[r] == targets[r];
  }
  return out;
}

absl::Status GatherLogits(Communicator* tp, const ShardPlan& plan, int64_t vocab_size,
                          const Tensor& local, Tensor* full) {
  const int64_t rows = local.dim(0), shard = local.dim(1);
  RETURN_IF_ERROR(full->Resize({rows, vocab_size}));
  if (tp == nullptr || tp->size() == 1) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(full->data<float>() + r * vocab_size, local.data<float>() + r * shard,
                  vocab_size * sizeof(float));
    }
    return absl::OkStatus();
  }
  const int n = tp->size();
  Tensor all(DType::kF32, {n, rows, shard});
  RETURN_IF_ERROR(tp->AllGather(local.view(), all.view()));
  for (int s = 0; s < n; ++s) {
    const int64_t begin = s * shard, count = std::min(shard, vocab_size - begin);
    for (int64_t r = 0; r < rows && count > 0; ++r) {
      std::memcpy(full->data<float>() + r * vocab_size + begin,
                  all.data<float>() + (s * rows + r) * shard, count * sizeof(float));
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera
