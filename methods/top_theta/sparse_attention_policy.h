// SparseAttentionPolicy: the AttentionPolicy of Top-theta and Top-k (shared/specs/top_theta.md
// §1, §3, §4). For each layer of this rank's stage it hands the attention op the variant as
// data: the layer's k, the rank's slice of the calibrated tables (its query heads, in q_proj's
// order), and counter outputs. No step needs communication: the variant is row-local and heads
// are never split, so every rank of any layout computes the same rows as one rank.
//
// Counters (per local layer and local query head, or local KV head for V rows), split into
// prefill rows and decode rows (a sequence's single row of a step, after its first): the kept
// attention elements |S| against the visible ones n, and the V rows a gathering kernel reads
// (the union of S over the KV head's query heads) against n. Dense rows count n kept.
#ifndef TESSERA_METHODS_TOP_THETA_SPARSE_ATTENTION_POLICY_H_
#define TESSERA_METHODS_TOP_THETA_SPARSE_ATTENTION_POLICY_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/forward_hooks.h"
#include "runtime/tensor.h"

namespace tessera::top_theta {

enum Phase { kPrefill = 0, kDecode = 1 };

struct AttentionCounters {
  int64_t layers = 0, heads = 0, kv_heads = 0;  // this rank's
  // [phase][local layer * heads + local head]
  std::array<std::vector<int64_t>, 2> kept, visible;
  // [phase][local layer * kv_heads + local KV head]
  std::array<std::vector<int64_t>, 2> vrows, vrows_visible;
  std::array<int64_t, 2> rows{0, 0};  // query rows of layer 0 of this stage, per phase

  void Resize(int64_t layers, int64_t heads, int64_t kv_heads);
};

class SparseAttentionPolicy : public AttentionPolicy {
 public:
  struct Layer {
    int32_t k = 0;                    // 0: dense
    std::vector<float> thresholds;    // Top-theta: [heads, bins]
    std::vector<float> missing_mass;  // offline SDC: [heads, bins]
  };
  // `base` holds the kind, placement, compensation and flags; `layers` one entry per local layer;
  // tables start at row length `bin_begin` and have `bins` columns.
  SparseAttentionPolicy(const AttentionVariant& base, std::vector<Layer> layers, int32_t bin_begin,
                        int64_t bins, Backend* backend, int64_t heads, int64_t kv_heads);

  absl::StatusOr<AttentionVariant> Variant(const LayerContext& ctx) override;
  // Folds the counters of the last pass into counters(); call before reading them.
  absl::Status Flush();
  const AttentionCounters& counters() const { return counters_; }

 private:
  // A layer's counter outputs of the last pass, not yet folded.
  struct Pending {
    bool set = false;
    bool dense = false;           // no row sparsified: the plain kernel ran, nothing to read back
    std::vector<int32_t> n;       // visible keys per row
    std::vector<uint8_t> decode;  // per row
    Tensor kept, vrows;           // [rows, heads], [rows, kv_heads] I32
  };
  absl::Status Fold(int64_t layer);

  AttentionVariant base_;
  std::vector<Layer> layers_;
  std::vector<Tensor> thresholds_, missing_mass_;  // per local layer, in the backend's memory
  int32_t bin_begin_;
  int64_t bins_;
  Backend* backend_;
  int64_t heads_, kv_heads_;
  std::vector<Pending> pending_;
  AttentionCounters counters_;
  std::vector<int32_t> host_kept_, host_vrows_;
};

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_SPARSE_ATTENTION_POLICY_H_
