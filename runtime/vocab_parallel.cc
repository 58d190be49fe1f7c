#include "runtime/vocab_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Word w of row r in the packed layout [kWords, rows]: each statistic is a contiguous row, so
// the backend's ops write straight into it.
enum Word : int { kMax = 0, kSum = 1, kShifted = 2, kTopValues = 3, kTopIds = 5, kTarget = 7 };

int32_t BitsId(float f) {
  int32_t id;
  std::memcpy(&id, &f, sizeof(id));
  return id;
}

// all: [n, rows, shard] gathered shards (ids [s * shard, (s + 1) * shard) in shard s) into
// out [rows, vocab_size], dropping the padding past the vocabulary.
void AssembleShards(const float* all, int n, int64_t rows, int64_t shard, int64_t vocab_size,
                    float* out) {
  for (int s = 0; s < n; ++s) {
    const int64_t begin = s * shard, count = std::min(shard, vocab_size - begin);
    for (int64_t r = 0; r < rows && count > 0; ++r) {
      std::memcpy(out + r * vocab_size + begin, all + (s * rows + r) * shard,
                  count * sizeof(float));
    }
  }
}

}  // namespace

double VocabRowStats::top1_prob() const { return std::exp(top1_logit - log_sum_exp); }
double VocabRowStats::top2_prob() const { return std::exp(top2_logit - log_sum_exp); }

VocabReducer::VocabReducer(Backend* backend, Communicator* tp, const ShardPlan& plan)
    : backend_(backend),
      tp_(tp != nullptr && tp->size() > 1 ? tp : nullptr),
      plan_(plan),
      packed_(backend, DType::kF32),
      all_packed_(backend, DType::kF32),
      padded_(backend, DType::kF32),
      all_padded_(backend, DType::kF32),
      top_(backend, DType::kF32),
      all_top_(backend, DType::kF32) {}

absl::Status VocabReducer::Gather(TensorView logits, const std::vector<int32_t>* targets) {
  const int64_t rows = logits.dim(0), width = logits.dim(1);
  if (width != plan_.vocab_rows || width < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VocabReducer: logits of ", width, " columns, but this rank holds ", plan_.vocab_rows,
        " vocabulary rows", width < 2 ? " (at least 2 are needed; use fewer tensor-parallel "
                                        "ranks)" : ""));
  }
  // One more row than is exchanged: the target indices (I32), so that scoring needs no buffer
  // of its own.
  RETURN_IF_ERROR(packed_.Resize({kWords + 1, rows}));
  const TensorView p = packed_.view().Rows(0, kWords);
  auto words = [&](int first, int count, DType dtype) {
    TensorView v = p.Rows(first, first + count);
    v.dtype = dtype;
    return v.Reshaped({rows, count});
  };
  auto row = [&](int w) { return p.Rows(w, w + 1).Reshaped({rows}); };
  RETURN_IF_ERROR(backend_->SoftmaxStats({logits, row(kMax), row(kSum), row(kShifted)}));
  RETURN_IF_ERROR(backend_->TopK({logits, words(kTopValues, 2, DType::kF32),
                                  words(kTopIds, 2, DType::kI32), plan_.vocab_begin}));
  if (targets != nullptr) {  // each row's target logit, where this shard holds the target
    std::vector<int32_t> index(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t local = (*targets)[r] - plan_.vocab_begin;
      index[r] = static_cast<int32_t>(r * width + ((local >= 0 && local < width) ? local : 0));
    }
    TensorView target_index = packed_.view().Rows(kWords, kWords + 1).Reshaped({rows});
    target_index.dtype = DType::kI32;
    RETURN_IF_ERROR(backend_->Synchronize());  // a previous call's gather may still read it
    RETURN_IF_ERROR(backend_->CopyToDevice(target_index.data, index.data(), rows * sizeof(int32_t)));
    RETURN_IF_ERROR(backend_->GatherRows({logits.Reshaped({rows * width, 1}), target_index,
                                          row(kTarget).Reshaped({rows, 1})}));
  }
  const int n = tp_ == nullptr ? 1 : tp_->size();
  gathered_.resize(static_cast<size_t>(n) * kWords * rows);
  if (tp_ == nullptr) {
    return backend_->CopyToHost(gathered_.data(), p.data, p.bytes());
  }
  RETURN_IF_ERROR(all_packed_.Resize({n, kWords * rows}));
  RETURN_IF_ERROR(backend_->Synchronize());
  RETURN_IF_ERROR(tp_->AllGather(p.Reshaped({kWords * rows}), all_packed_.view()));
  return backend_->CopyToHost(gathered_.data(), all_packed_.view().data,
                              all_packed_.view().bytes());
}

// Spec: M = max_r m_r, Z = sum_r S_r e^(m_r - M), log-sum-exp = M + log Z,
// entropy = log Z - sum_r e^(m_r - M) (E_r + (m_r - M) S_r) / Z; the top-2 merged over ranks in
// rank order (shards hold increasing ids, so strict comparisons keep the smaller id on ties).
VocabRowStats VocabReducer::Reduce(int64_t rows, int64_t row, double* target_logit,
                                   int32_t target) const {
  const int n = tp_ == nullptr ? 1 : tp_->size();
  auto word = [&](int rank, int w) { return gathered_[(rank * kWords + w) * rows + row]; };
  double big_m = kNegInf;
  for (int r = 0; r < n; ++r) big_m = std::max<double>(big_m, word(r, kMax));
  double z = 0.0, shifted = 0.0;
  VocabRowStats s;
  s.top1_logit = s.top2_logit = -std::numeric_limits<float>::infinity();
  s.top1 = s.top2 = std::numeric_limits<int32_t>::max();
  for (int r = 0; r < n; ++r) {
    const double m = word(r, kMax), sum = word(r, kSum);
    if (sum > 0.0) {
      const double scale = std::exp(m - big_m);
      z += sum * scale;
      shifted += scale * (word(r, kShifted) + (m - big_m) * sum);
    }
    for (int k = 0; k < 2; ++k) {
      const float v = gathered_[(r * kWords + kTopValues) * rows + 2 * row + k];
      const int32_t id = BitsId(gathered_[(r * kWords + kTopIds) * rows + 2 * row + k]);
      if (v > s.top1_logit || (v == s.top1_logit && id < s.top1)) {
        s.top2_logit = s.top1_logit;
        s.top2 = s.top1;
        s.top1_logit = v;
        s.top1 = id;
      } else if (v > s.top2_logit || (v == s.top2_logit && id < s.top2)) {
        s.top2_logit = v;
        s.top2 = id;
      }
    }
  }
  s.max_logit = static_cast<float>(big_m);
  s.log_sum_exp = big_m + std::log(z);
  s.entropy = std::log(z) - shifted / z;
  if (target_logit != nullptr) {
    const int holder = static_cast<int>(target / plan_.vocab_shard);
    *target_logit = word(std::min(holder, n - 1), kTarget);
  }
  return s;
}

absl::StatusOr<std::vector<VocabRowStats>> VocabReducer::Stats(TensorView logits) {
  RETURN_IF_ERROR(Gather(logits, nullptr));
  const int64_t rows = logits.dim(0);
  std::vector<VocabRowStats> out(rows);
  for (int64_t r = 0; r < rows; ++r) out[r] = Reduce(rows, r, nullptr, 0);
  return out;
}

absl::StatusOr<std::vector<int32_t>> VocabReducer::ArgMax(TensorView logits) {
  ASSIGN_OR_RETURN(std::vector<VocabRowStats> stats, Stats(logits));
  std::vector<int32_t> out(stats.size());
  for (size_t r = 0; r < stats.size(); ++r) out[r] = stats[r].top1;
  return out;
}

absl::StatusOr<std::vector<TokenLogProb>> VocabReducer::LogProbs(
    TensorView logits, const std::vector<int32_t>& targets) {
  const int64_t rows = logits.dim(0);
  if (static_cast<int64_t>(targets.size()) != rows) {
    return absl::InvalidArgumentError("VocabReducer::LogProbs: one target per row");
  }
  RETURN_IF_ERROR(Gather(logits, &targets));
  std::vector<TokenLogProb> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double target_logit = 0.0;
    const VocabRowStats s = Reduce(rows, r, &target_logit, targets[r]);
    out[r].logprob = target_logit - s.log_sum_exp;
    out[r].is_greedy = s.top1 == targets[r];
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<VocabReducer::IdLogit>>> VocabReducer::TopK(
    TensorView logits, int k) {
  const int64_t rows = logits.dim(0), width = logits.dim(1);
  const int64_t vocab = tp_ == nullptr || tp_->size() == 1 ? width : plan_.vocab_shard * tp_->size();
  if (k < 1 || k > vocab) {
    return absl::InvalidArgumentError(absl::StrCat("VocabReducer::TopK: k=", k, " with a ",
                                                   "vocabulary of ", vocab));
  }
  // Each rank sends its own best min(k, shard) (the same count on every rank; a smaller last
  // shard pads with -inf), as [2, rows, kr]: values, then ids (as I32 bits), one all-gather.
  const int64_t kr = tp_ == nullptr || tp_->size() == 1 ? k : std::min<int64_t>(k, plan_.vocab_shard);
  const int64_t here = std::min(kr, width);
  RETURN_IF_ERROR(top_.Resize({2, rows * kr}));
  TensorView values = top_.view().Rows(0, 1).Reshaped({rows, kr});
  TensorView ids = top_.view().Rows(1, 2).Reshaped({rows, kr});
  ids.dtype = DType::kI32;
  if (here == kr) {
    RETURN_IF_ERROR(backend_->TopK({logits, values, ids, plan_.vocab_begin}));
  } else {  // this shard is shorter: its whole top, then padding
    if (padded_top_.view().rank == 0) padded_top_ = Tensor(backend_, DType::kF32);
    RETURN_IF_ERROR(padded_top_.Resize({2, rows * here}));
    TensorView v = padded_top_.view().Rows(0, 1).Reshaped({rows, here});
    TensorView i = padded_top_.view().Rows(1, 2).Reshaped({rows, here});
    i.dtype = DType::kI32;
    RETURN_IF_ERROR(backend_->TopK({logits, v, i, plan_.vocab_begin}));
    std::vector<float> pad_values(kr - here, -std::numeric_limits<float>::infinity());
    std::vector<int32_t> pad_ids(kr - here, std::numeric_limits<int32_t>::max());
    for (int64_t r = 0; r < rows; ++r) {
      RETURN_IF_ERROR(backend_->CopyWithinDevice(values.Rows(r, r + 1).data, v.Rows(r, r + 1).data, here * 4));
      RETURN_IF_ERROR(backend_->CopyWithinDevice(ids.Rows(r, r + 1).data, i.Rows(r, r + 1).data, here * 4));
      RETURN_IF_ERROR(backend_->CopyToDevice(values.Rows(r, r + 1).as<float>() + here,
                                             pad_values.data(), pad_values.size() * 4));
      RETURN_IF_ERROR(backend_->CopyToDevice(ids.Rows(r, r + 1).as<int32_t>() + here,
                                             pad_ids.data(), pad_ids.size() * 4));
    }
  }
  const int n = tp_ == nullptr ? 1 : tp_->size();
  std::vector<float> all(static_cast<size_t>(n) * 2 * rows * kr);
  if (tp_ == nullptr) {
    RETURN_IF_ERROR(backend_->CopyToHost(all.data(), top_.view().data, top_.view().bytes()));
  } else {
    RETURN_IF_ERROR(all_top_.Resize({n, 2 * rows * kr}));
    RETURN_IF_ERROR(backend_->Synchronize());
    RETURN_IF_ERROR(tp_->AllGather(top_.view().Reshaped({2 * rows * kr}), all_top_.view()));
    RETURN_IF_ERROR(backend_->CopyToHost(all.data(), all_top_.view().data, all.size() * 4));
  }
  std::vector<std::vector<IdLogit>> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<IdLogit>& best = out[r];
    for (int s = 0; s < n; ++s) {
      const float* v = all.data() + (static_cast<size_t>(s) * 2 * rows + r) * kr;
      const float* id = all.data() + (static_cast<size_t>(s) * 2 * rows + rows + r) * kr;
      for (int64_t j = 0; j < kr; ++j) {
        if (BitsId(id[j]) != std::numeric_limits<int32_t>::max()) best.push_back({BitsId(id[j]), v[j]});
      }
    }
    if (static_cast<int64_t>(best.size()) < k) {
      return absl::InvalidArgumentError(absl::StrCat("VocabReducer::TopK: k=", k, " exceeds the ",
                                                     best.size(), " tokens of the vocabulary"));
    }
    std::partial_sort(best.begin(), best.begin() + k, best.end(),
                      [](const IdLogit& a, const IdLogit& b) {
                        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
                      });
    best.resize(k);
  }
  return out;
}

absl::Status VocabReducer::GatherFull(TensorView logits, int64_t vocab_size, Tensor* host_full) {
  const int64_t rows = logits.dim(0), width = logits.dim(1), shard = plan_.vocab_shard;
  RETURN_IF_ERROR(host_full->Resize({rows, vocab_size}));
  if (tp_ == nullptr) {
    return backend_->CopyToHost(host_full->data<float>(), logits.data, logits.bytes());
  }
  // Every rank sends [rows, shard]: a short last shard is copied into a padded buffer first.
  TensorView send = logits;
  if (width < shard) {
    RETURN_IF_ERROR(padded_.Resize({rows, shard}));
    for (int64_t r = 0; r < rows; ++r) {
      RETURN_IF_ERROR(backend_->CopyWithinDevice(padded_.data<float>() + r * shard,
                                                 logits.as<const float>() + r * width,
                                                 width * sizeof(float)));
    }
    send = padded_.view();
  }
  const int n = tp_->size();
  RETURN_IF_ERROR(all_padded_.Resize({n, rows, shard}));
  RETURN_IF_ERROR(backend_->Synchronize());
  RETURN_IF_ERROR(tp_->AllGather(send, all_padded_.view()));
  std::vector<float> all(static_cast<size_t>(n) * rows * shard);
  RETURN_IF_ERROR(backend_->CopyToHost(all.data(), all_padded_.view().data, all.size() * 4));
  AssembleShards(all.data(), n, rows, shard, vocab_size, host_full->data<float>());
  return absl::OkStatus();
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
  AssembleShards(all.data<float>(), n, rows, shard, vocab_size, full->data<float>());
  return absl::OkStatus();
}

}  // namespace tessera
