// Argument structs of the Backend ops, shared verbatim by the CPU and CUDA backends.
//
// Conventions for every op:
// - Shapes are row-major; "n" is the number of token rows in a ragged batch (tokens of several
//   sequences laid end to end), "dim" the model width, "kv_heads" the KV heads held by this rank.
// - Activations are F32. Weights (GemmArgs::w, EmbeddingArgs::table, RmsNormArgs::weight) and
//   KV caches (KvWriteArgs / AttentionArgs k_cache, v_cache) may be F32, F16 or BF16; every op
//   accumulates in F32.
// - Inputs and outputs may alias only where a comment says so.
// - Ops are validated by kernels/op_validation.h before any backend sees them.
#ifndef TESSERA_KERNELS_OP_ARGS_H_
#define TESSERA_KERNELS_OP_ARGS_H_

#include <cstdint>

#include "kernels/tensor_view.h"

namespace tessera {

// out[i, :] = table[ids[i] - vocab_start, :] when ids[i] is in [vocab_start, vocab_start + rows),
// else zeros (a vocabulary-parallel shard holds rows [vocab_start, vocab_start + rows) only).
struct EmbeddingArgs {
  TensorView ids;    // [n] I32
  TensorView table;  // [rows, dim] F32 | F16 | BF16
  TensorView out;    // [n, dim] F32
  int64_t vocab_start = 0;
};

// out = in / sqrt(mean(in^2) + eps) * weight, per row. `out` may alias `in`.
struct RmsNormArgs {
  TensorView in;      // [n, dim] F32
  TensorView weight;  // [dim] F32 | F16 | BF16
  TensorView out;     // [n, dim] F32
  float eps = 1e-5f;
};

// y = x * w^T (+ y when accumulate), w in the Hugging Face [out_features, in_features] layout.
struct GemmArgs {
  TensorView x;  // [m, k] F32
  TensorView w;  // [n, k] F32 | F16 | BF16
  TensorView y;  // [m, n] F32; must not alias x
  bool accumulate = false;
};

// Rotary position embedding in the Hugging Face "rotate half" convention, in place:
// for i < head_dim/2, angle = positions[t] * inv_freq[i],
//   x'[i]            = (x[i] cos - x[i + head_dim/2] sin) * attention_scaling
//   x'[i+head_dim/2] = (x[i + head_dim/2] cos + x[i] sin) * attention_scaling
struct RopeArgs {
  TensorView x;          // [n, heads, head_dim] F32, rotated in place
  TensorView positions;  // [n] I32
  TensorView inv_freq;   // [head_dim / 2] F32
  float attention_scaling = 1.0f;
};

// k_cache[slots[i], entries[i]] = k[i] (likewise v). An entry is a cache row of the slot, not a
// position: the cache keeps each entry's position itself (runtime/kv_cache.h), so entries can be
// dropped and compacted while keys keep the rotation of their original positions. A half-precision
// cache stores each element rounded to nearest even (as CastArgs); an F32 cache is a plain copy.
struct KvWriteArgs {
  TensorView k;          // [n, kv_heads, head_dim] F32
  TensorView v;          // [n, kv_heads, head_dim] F32
  TensorView k_cache;    // [n_slots, max_seq, kv_heads, head_dim] F32 | F16 | BF16
  TensorView v_cache;    // [n_slots, max_seq, kv_heads, head_dim] the dtype of k_cache
  TensorView slots;      // [n] I32
  TensorView entries;    // [n] I32, each < max_seq
};

// Which keys a query may see and how the kept ones are weighted (shared/specs/top_theta.md).
// Attention variants are data, not callbacks. Notation, per query row and head: n visible keys
// (entries[i] + 1), scaled scores a_j, the row max m over all n, e_j = exp(a_j - m),
// Z_all = sum_j e_j, p_j = e_j / Z_all; x_j is a_j (pre-softmax) or p_j (post-softmax).
//
// kCausal: every key (the plain attention; `k` and `placement` only serve the calibration
// outputs). kTopTheta / kTopK sparsify only the rows with n > k ("active" rows; k = 0 keeps every
// row dense): the kept set S is {j : x_j > theta} (strictly), with theta = thresholds[h][clamp(n,
// bin_begin, bin_begin + bins - 1) - bin_begin], or the k largest a_j (ties at the k-th value
// filled from the largest column index down). Top-theta: `cap_k` keeps the k survivors with the
// largest indices; an empty S keeps the row's largest score (the latest of equal ones) unless
// `empty_row_zero`.
//   pre-softmax:  w_j = e_j / (D + sdc_scale * M) on S, D = sum_S e_j, M by `sdc`:
//                 kNone 0; kExact sum over the dropped e_j; kExpThreshold (n - |S|) exp(theta - m);
//                 kOffline missing_mass[h][bin]. Lost mass = sdc_scale * M / (D + sdc_scale * M).
//   post-softmax: w_j = p_j on S (no renormalisation); lost mass = sum over the dropped p_j.
//   vmc: out += lost mass * (mean of the row's n visible V rows).
// With nothing dropped (theta = -inf, k >= n) every combination is bit-identical to kCausal.
struct AttentionVariant {
  enum class Kind : uint8_t { kCausal, kTopTheta, kTopK };
  enum class Placement : uint8_t { kPreSoftmax, kPostSoftmax };
  enum class Compensation : uint8_t { kNone, kExact, kExpThreshold, kOffline };
  Kind kind = Kind::kCausal;
  Placement placement = Placement::kPreSoftmax;
  Compensation sdc = Compensation::kNone;
  float sdc_scale = 1.0f;
  bool vmc = false;
  bool cap_k = false;
  bool empty_row_zero = false;
  int32_t k = 0;              // the layer's K_l; rows with n <= k are dense
  int32_t bin_begin = 1;      // the row length n of column 0 of thresholds / missing_mass
  TensorView thresholds;      // kTopTheta: [heads, bins] F32, in the placement's domain
  TensorView missing_mass;    // kOffline: [heads, bins] F32, relative to the full row max
  // Optional outputs (I32 counts per query row; a dense row counts n):
  TensorView kept;            // [n, heads] I32: |S|
  TensorView kept_vrows;      // [n, kv_heads] I32: |union of S over the KV head's query heads|
  // Optional calibration outputs, for rows with k > 0 and n > k (NaN on the other rows), computed
  // on the scores before any sparsification of this call:
  TensorView row_threshold;   // [n, heads] F32: the (k+1)-th largest x_j
  TensorView topk_dropped;    // [n, heads] F32: sum of e_j outside the top k (Top-k's exact M)
  // Optional, computed by the model after the attention op (Backend::KeyScores), not by it:
  // HOMER's significance of every key query row `score_row` sees, [entries[score_row] + 1] F32,
  // max over this rank's query heads of scale * q . k (a tensor-parallel rank reduces the MAX).
  TensorView key_scores;
  int32_t score_row = -1;

  bool sparse() const { return kind != Kind::kCausal; }
  bool has_outputs() const {
    return !kept.empty() || !kept_vrows.empty() || !row_threshold.empty() ||
           !topk_dropped.empty();
  }
};

// Scaled dot-product attention of each query row over its own sequence's cache:
// token i (head h) attends to the entries k_cache[slots[i], 0..entries[i]] (inclusive) of KV head
// h / (heads/kv_heads) (grouped-query attention), softmax(q k^T * scale) v. entries[i] is the
// cache row holding the token's own K/V, which the caller writes first (KvWrite), so prefill and
// decode are the same op on a ragged batch. Entries are cache rows, not positions: after a
// compaction (KvCache::Compact) the rows [0, entries[i]] hold keys of arbitrary, increasing
// positions, already rotated. Half-precision cache elements are widened to F32 exactly when read;
// scores, softmax and the weighted sum of values are F32.
struct AttentionArgs {
  TensorView q;          // [n, heads, head_dim] F32
  TensorView k_cache;    // [n_slots, max_seq, kv_heads, head_dim] F32 | F16 | BF16
  TensorView v_cache;    // [n_slots, max_seq, kv_heads, head_dim] the dtype of k_cache
  TensorView slots;      // [n] I32
  TensorView entries;    // [n] I32, each < max_seq
  TensorView out;        // [n, heads, head_dim] F32
  TensorView lse;        // optional [n, heads] F32: log-sum-exp of the scaled scores
  float scale = 1.0f;
  AttentionVariant variant;
};

// out[i] = in[indices[i]]: rows (slices along dim 0) of any dtype, copied bit for bit. Used to
// compact KV cache entries and to pick rows of activations. `out` must not overlap `in`.
struct GatherRowsArgs {
  TensorView in;       // [rows, ...] any dtype
  TensorView indices;  // [m] I32, each in [0, rows)
  TensorView out;      // [m, ...] the dtype and row size of `in`
};

// Combines two partial attention results over disjoint key sets (split-KV decode):
// out = (exp(lse_a) out_a + exp(lse_b) out_b) / (exp(lse_a) + exp(lse_b)); lse_out = log(that sum).
struct MergeAttentionArgs {
  TensorView out_a;    // [n, heads, head_dim] F32
  TensorView lse_a;    // [n, heads] F32
  TensorView out_b;    // [n, heads, head_dim] F32
  TensorView lse_b;    // [n, heads] F32
  TensorView out;      // [n, heads, head_dim] F32; may alias out_a
  TensorView lse_out;  // [n, heads] F32; may alias lse_a
};

// out = silu(gate) * up, silu(x) = x / (1 + exp(-x)). `out` may alias gate.
struct SiluMulArgs {
  TensorView gate;  // [n, hidden] F32
  TensorView up;    // [n, hidden] F32
  TensorView out;   // [n, hidden] F32
};

// out = a + b elementwise. `out` may alias a or b.
struct AddArgs {
  TensorView a;    // F32
  TensorView b;    // F32, same shape
  TensorView out;  // F32, same shape
};

// out = a + weight * (b - a) elementwise, rounded once after the difference (a fused
// multiply-add): exactly a where b equals a (equal infinities included), a at weight 0 for a
// finite b. `out` may alias a or b.
struct LerpArgs {
  TensorView a;    // F32
  TensorView b;    // F32, same shape
  TensorView out;  // F32, same shape
  float weight = 0.0f;
};

// out = (a + b) / 2 elementwise, computed in F32 and rounded once to the operands' dtype (F32,
// F16 or BF16, the same for all three): the average of a prompt suffix's copies in HOMER's merges
// (hidden states and cached K/V rows). `out` may alias a or b.
struct AverageArgs {
  TensorView a;
  TensorView b;    // the dtype and shape of a
  TensorView out;  // the dtype and shape of a
};

// Token significance for HOMER (shared/specs/homer.md §1.5): for one rotated query row q and the
// first out.dim(0) entries of cache slot `slot`, out[j] = max over heads h of
// scale * q_h . k[slot, j, h / (heads / kv_heads)] (grouped-query attention), in F32: the largest
// pre-softmax logit any head gives key j.
struct KeyScoresArgs {
  TensorView q;        // [heads, head_dim] F32
  TensorView k_cache;  // [n_slots, max_seq, kv_heads, head_dim] F32 | F16 | BF16
  TensorView out;      // [count] F32, count <= max_seq
  int32_t slot = 0;    // in [0, n_slots)
  float scale = 1.0f;
};

// Counter-based dropout in place, without the 1 / (1 - rate) rescaling: element (i, h) of x
// becomes +0 iff u < rate, else it is unchanged, where u = (w >> 8) * 2^-24, c = column_offset +
// h, and w is word c % 4 of Philox4x32-10 (kernels/philox.h) with key (row_words[i][0],
// row_words[i][1]) and counter (c / 4, row_words[i][2], row_words[i][3], stream). The mask
// depends only on those words and the global column c, never on the row's place in the batch
// or on how the columns are sharded; rate 0 keeps every element.
struct PhiloxDropoutArgs {
  TensorView x;          // [n, h] F32, in place
  TensorView row_words;  // [n, 4] I32 bit patterns: key low, key high, counter words 1 and 2
  uint32_t stream = 0;   // counter word 3
  float rate = 0.0f;     // in [0, 1]
  int64_t column_offset = 0;  // the global index of column 0, a multiple of 4
};

// Elementwise conversion between F32, F16 and BF16 (round to nearest even). A NaN becomes the
// output dtype's canonical quiet NaN with the input's sign (F32 0x7fc00000, BF16 0x7fc0, F16
// 0x7e00, sign bit kept), so every backend writes the same bits.
struct CastArgs {
  TensorView in;
  TensorView out;  // same element count
};

// The order of ArgMax and TopK, identical on every backend: larger value first, the lower index
// first among equal values (-0 equals +0), and NaN after every number (-inf included), NaNs in
// index order. A row therefore always yields valid indices, whatever it holds.
//
// Per row: the largest logit and its index + index_offset (first index on ties, as torch.argmax).
struct ArgMaxArgs {
  TensorView logits;   // [n, v] F32
  TensorView values;   // [n] F32
  TensorView indices;  // [n] I32
  int64_t index_offset = 0;
};

// Per row: the first k logits of the order above, with their indices + index_offset.
struct TopKArgs {
  TensorView logits;   // [n, v] F32
  TensorView values;   // [n, k] F32
  TensorView indices;  // [n, k] I32
  int64_t index_offset = 0;
};

// Per row statistics from which log-softmax and entropy follow, and which combine across
// vocabulary shards: max m, S = sum exp(x - m), E = sum (x - m) exp(x - m) (centred, so that no
// large logit cancels). log p(x_i) = x_i - m - log S;  entropy = log S - E / S (nats).
// Entries of -inf have weight 0 and add nothing; a row of only -inf gives m = -inf, S = E = 0.
struct SoftmaxStatsArgs {
  TensorView logits;           // [n, v] F32
  TensorView max;              // [n] F32
  TensorView sum_exp;          // [n] F32
  TensorView sum_exp_shifted;  // [n] F32
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_OP_ARGS_H_
