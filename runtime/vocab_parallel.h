// Reductions over vocabulary-parallel logits. Each tensor-parallel rank holds the logits of its
// vocabulary shard, [rows, plan.vocab_rows] F32 in the model backend's memory (padding ids past
// the vocabulary are not stored, so they never count). The local statistics of every row are
// computed on the backend (SoftmaxStats, TopK, GatherRows), packed into one buffer and exchanged
// with ONE all-gather over the tensor-parallel group; every rank then reduces the gathered array
// on the host in rank order, in double precision. The results (and every decision made from
// them) are therefore bitwise identical on all ranks of the group, even if their logits differ
// in the last bits. Only the packed statistics (8 words per row and rank) reach the host.
//
//   VocabReducer reducer(&backend, tp, plan);
//   ASSIGN_OR_RETURN(auto stats, reducer.Stats(logits));          // confidence, entropy, top-2
//   ASSIGN_OR_RETURN(auto lp, reducer.LogProbs(logits, targets));  // scoring
//
// Not thread-safe (device scratch is reused between calls); one reducer per model.
#ifndef TESSERA_RUNTIME_VOCAB_PARALLEL_H_
#define TESSERA_RUNTIME_VOCAB_PARALLEL_H_

#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "runtime/shard_plan.h"
#include "runtime/tensor.h"

namespace tessera {

// The softmax over the whole vocabulary of one row of logits z.
struct VocabRowStats {
  float max_logit = 0.0f;    // max z
  double log_sum_exp = 0.0;  // log sum exp z
  double entropy = 0.0;      // -sum p log p, nats
  int32_t top1 = 0, top2 = 0;  // the two largest logits' ids (ties: the smaller id first)
  float top1_logit = 0.0f, top2_logit = 0.0f;
  double top1_prob() const;  // max probability
  double top2_prob() const;
  double top2_gap() const { return top1_prob() - top2_prob(); }  // p(1) - p(2), in [0, 1]
};

struct TokenLogProb {
  double logprob = 0.0;  // log softmax(z)[target]
  bool is_greedy = false;  // target is the argmax (ties: the smaller id)
};

class VocabReducer {
 public:
  // `backend` holds the logits; `tp` (null or size 1: one rank) is the tensor-parallel group;
  // both must outlive the reducer.
  VocabReducer(Backend* backend, Communicator* tp, const ShardPlan& plan);

  // Per row statistics of `logits` [rows, plan.vocab_rows] (this rank's shard).
  absl::StatusOr<std::vector<VocabRowStats>> Stats(TensorView logits);
  // Per row: the argmax over the whole vocabulary (the smaller id on ties, as torch.argmax).
  absl::StatusOr<std::vector<int32_t>> ArgMax(TensorView logits);
  // Per row: log-probability of targets[row] and whether it is the argmax.
  absl::StatusOr<std::vector<TokenLogProb>> LogProbs(TensorView logits,
                                                     const std::vector<int32_t>& targets);
  // Per row: the k largest logits of the whole vocabulary as (id, logit), descending (the smaller
  // id first on ties), from one all-gather of each shard's own top min(k, shard). k is at most
  // the vocabulary size.
  struct IdLogit {
    int32_t id = 0;
    float logit = 0.0f;
  };
  absl::StatusOr<std::vector<std::vector<IdLogit>>> TopK(TensorView logits, int k);
  // The full [rows, vocab_size] logits on the host of every rank (for sampling with top-k /
  // top-p), gathered over the group in the backend's memory.
  absl::Status GatherFull(TensorView logits, int64_t vocab_size, Tensor* host_full);

 private:
  // Runs the local statistics (and target logits, when given) and the all-gather; fills
  // gathered_ with [tp_size, kWords, rows] words on the host.
  absl::Status Gather(TensorView logits, const std::vector<int32_t>* targets);
  VocabRowStats Reduce(int64_t rows, int64_t row, double* target_logit, int32_t target) const;

  static constexpr int kWords = 8;  // max, S, E, top1, top2 values, top1, top2 ids, target logit
  Backend* backend_;
  Communicator* tp_;
  ShardPlan plan_;
  Tensor packed_, all_packed_, padded_, all_padded_, top_, all_top_, padded_top_;
  std::vector<float> gathered_;
};

// Host logits of a rank ([rows, vocab_shard], padding columns at -inf, as
// LlamaModel::Forward copies them) to the full [rows, vocab_size] logits on every rank. For
// host-memory communicators (MPI, threads) only.
absl::Status GatherLogits(Communicator* tp, const ShardPlan& plan, int64_t vocab_size,
                          const Tensor& local_logits, Tensor* full);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_VOCAB_PARALLEL_H_
