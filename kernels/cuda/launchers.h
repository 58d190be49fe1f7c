// Kernel launchers of the CUDA backend: the boundary between the host glue (compiled by the C++
// compiler, with Abseil) and the .cu files (compiled by nvcc, with no Abseil).
//
// Every launcher enqueues its kernels on `stream` and returns the launch error
// (cudaGetLastError) or cudaSuccess; it never synchronises and never allocates. Arguments were
// validated by kernels/op_validation.h; the shapes and semantics are those of kernels/op_args.h.
// Element counts of zero are handled by the caller (no launch). All pointers are device
// pointers. `error_flags` is a device-visible word array (CudaBackend::kErrorFlagWords) that
// kernels set to 1 when a token's cache slot or position is out of range (the CPU backend
// returns OutOfRange there; CudaBackend::Synchronize() reports it).
#ifndef TESSERA_KERNELS_CUDA_LAUNCHERS_H_
#define TESSERA_KERNELS_CUDA_LAUNCHERS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tessera::cuda {

// Storage type of a weight or KV-cache operand (F32, F16 or BF16); activations are always F32.
enum class Storage : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Indices into the error-flag words.
enum ErrorFlag : int {
  kKvWriteOutOfRange = 0,
  kAttentionOutOfRange = 1,
  kGatherOutOfRange = 2,
  kErrorFlagCount = 3
};

// embedding.cu: out[i, :] = table[ids[i] - vocab_start, :] widened to F32, or zeros when the id
// is outside [vocab_start, vocab_start + rows).
cudaError_t LaunchEmbedding(const int32_t* ids, const void* table, Storage table_type,
                            int64_t rows, int64_t dim, int64_t vocab_start, float* out, int64_t n,
                            cudaStream_t stream);

// rms_norm.cu: one block per row; sum of squares in F64 (as the CPU backend). out may alias in.
cudaError_t LaunchRmsNorm(const float* in, const void* weight, Storage weight_type, float* out,
                          int64_t n, int64_t dim, float eps, cudaStream_t stream);

// rope.cu: rotate-half rotary embedding in place on x [n, heads, head_dim].
cudaError_t LaunchRope(float* x, const int32_t* positions, const float* inv_freq, int64_t n,
                       int64_t heads, int64_t head_dim, float attention_scaling,
                       cudaStream_t stream);

// kv_write.cu: k_cache[slots[i], entries[i]] = k[i] (likewise v); rows are kv_heads*head_dim
// elements of `cache_type` (F32 copied, F16 / BF16 rounded to nearest even). Tokens outside the
// cache are skipped and flagged.
cudaError_t LaunchKvWrite(const float* k, const float* v, void* k_cache, void* v_cache,
                          Storage cache_type, const int32_t* slots, const int32_t* entries,
                          int64_t n, int64_t n_slots, int64_t max_seq, int64_t row,
                          int* error_flags, cudaStream_t stream);

// gather_rows.cu: out[i, :] = in[indices[i], :] for rows of `row_bytes` bytes. Indices outside
// [0, rows) are skipped and flagged (kGatherOutOfRange).
cudaError_t LaunchGatherRows(const void* in, int64_t rows, const int32_t* indices, int64_t m,
                             void* out, int64_t row_bytes, int* error_flags, cudaStream_t stream);

// attention.cu. Head dimensions the attention kernel is compiled for.
bool AttentionSupportsHeadDim(int64_t head_dim);

struct AttentionParams {
  const float* q = nullptr;       // [n, heads, head_dim]
  const void* k_cache = nullptr;  // [n_slots, max_seq, kv_heads, head_dim] of cache_type
  const void* v_cache = nullptr;  // likewise
  Storage cache_type = Storage::kF32;  // widened to F32 when staged; F32 accumulation
  const int32_t* slots = nullptr;      // [n]
  const int32_t* entries = nullptr;  // [n] cache row of the token's own K/V
  float* out = nullptr;  // [n, heads, head_dim]
  float* lse = nullptr;  // optional [n, heads]
  int64_t n = 0, heads = 0, kv_heads = 0, head_dim = 0, n_slots = 0, max_seq = 0;
  float scale = 1.0f;
  int* error_flags = nullptr;
  // Split-KV: `splits` blocks per query tile each take `split_keys` consecutive keys and write
  // partial states to `partial_out` [splits, n, heads, head_dim] and `partial_lse`
  // [splits, n, heads]; a merge kernel then writes out/lse. splits == 1 writes out directly.
  int splits = 1;
  int64_t split_keys = 0;
  float* partial_out = nullptr;
  float* partial_lse = nullptr;
};

// Query rows (token, head of a KV group) one attention block holds.
constexpr int kAttentionRowsPerBlock = 16;

cudaError_t LaunchAttention(const AttentionParams& p, cudaStream_t stream);

// sparse_attention.cu: the sparse variants of AttentionArgs::variant (Top-theta, Top-k, their
// compensations, counters and calibration outputs) with the semantics of the CPU reference
// kernel (kernels/cpu/sparse_attention.cc). One block per (token, KV head) item of
// [item_begin, item_end); each item's G query heads run one after another over per-item scratch
// (`scores` [items, max_seq] F32, `ranks` [items, max_seq] I32, `flags` [items, max_seq]
// bytes, items = item_end - item_begin), and only the kept V rows are read for the weighted sum.
// Optional pointers may be null.
struct SparseAttentionParams {
  const float* q = nullptr;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  Storage cache_type = Storage::kF32;
  const int32_t* slots = nullptr;
  const int32_t* entries = nullptr;
  float* out = nullptr;
  float* lse = nullptr;
  int64_t n = 0, heads = 0, kv_heads = 0, head_dim = 0, n_slots = 0, max_seq = 0;
  float scale = 1.0f;
  int* error_flags = nullptr;
  int kind = 0;           // AttentionVariant::Kind: 0 causal, 1 Top-theta, 2 Top-k
  int post = 0;           // post-softmax placement
  int sdc = 0;            // AttentionVariant::Compensation: 0 none, 1 exact, 2 exp-threshold, 3 offline
  float sdc_scale = 1.0f;
  int vmc = 0, cap_k = 0, empty_row_zero = 0;
  int32_t k = 0, bin_begin = 1;
  const float* thresholds = nullptr;    // [heads, bins]
  const float* missing_mass = nullptr;  // [heads, bins]
  int64_t bins = 1, mass_bins = 1;
  int32_t* kept = nullptr;              // [n, heads]
  int32_t* kept_vrows = nullptr;        // [n, kv_heads]
  float* row_threshold = nullptr;       // [n, heads]
  float* topk_dropped = nullptr;        // [n, heads]
  int64_t item_begin = 0, item_end = 0;
  float* scores = nullptr;              // scratch
  int32_t* ranks = nullptr;             // scratch
  unsigned char* flags = nullptr;       // scratch
};
cudaError_t LaunchSparseAttention(const SparseAttentionParams& p, cudaStream_t stream);

// merge_attention.cu: the two-state merge of MergeAttentionArgs over rows = n * heads. out may
// alias out_a and lse_out may alias lse_a.
cudaError_t LaunchMergeAttention(const float* out_a, const float* lse_a, const float* out_b,
                                 const float* lse_b, float* out, float* lse_out, int64_t rows,
                                 int64_t head_dim, cudaStream_t stream);

// elementwise.cu
cudaError_t LaunchSiluMul(const float* gate, const float* up, float* out, int64_t count,
                          cudaStream_t stream);
cudaError_t LaunchAdd(const float* a, const float* b, float* out, int64_t count,
                      cudaStream_t stream);
// out = fma(weight, b - a, a); out may alias a or b.
cudaError_t LaunchLerp(const float* a, const float* b, float* out, float weight, int64_t count,
                       cudaStream_t stream);
// key_scores.cu: KeyScoresArgs (kernels/op_args.h) over the `count` keys from element slot_base
// of k_cache; and AverageArgs, out = (a + b) / 2 of `count` elements of storage `type`.
cudaError_t LaunchKeyScores(const float* q, const void* k_cache, Storage cache_type,
                            int64_t slot_base, int64_t count, int64_t heads, int64_t kv_heads,
                            int64_t head_dim, float scale, float* out, cudaStream_t stream);
cudaError_t LaunchAverage(const void* a, const void* b, void* out, Storage type, int64_t count,
                          cudaStream_t stream);
// PhiloxDropoutArgs (kernels/op_args.h) on x [n, h] in place; row_words [n, 4].
cudaError_t LaunchPhiloxDropout(float* x, const uint32_t* row_words, int64_t n, int64_t h,
                                int64_t column_offset, uint32_t stream_word, float rate,
                                cudaStream_t stream);
// Conversion between F32, F16 and BF16, round to nearest even (the CPU's FloatToBf16 /
// FloatToF16). in and out must not overlap unless they are the same buffer and type.
cudaError_t LaunchCast(const void* in, Storage in_type, void* out, Storage out_type,
                       int64_t count, cudaStream_t stream);

// gemm_scaling.cu: the F16 prefill GEMM's per-row power-of-two scaling. CastRowsToF16Scaled
// writes out[i, :] = x[i, :] / scales[i] as F16 with scales[i] = 1 unless the row exceeds 2^15
// in magnitude; ScaleRows writes y (+)= product * scales[row] over [m, n].
cudaError_t LaunchCastRowsToF16Scaled(const float* x, int64_t m, int64_t k, void* out,
                                      float* scales, cudaStream_t stream);
cudaError_t LaunchScaleRows(const float* product, const float* scales, int64_t m, int64_t n,
                            bool accumulate, float* y, cudaStream_t stream);

// gemv.cu: y[m, n] (+)= x[m, k] * w[n, k]^T for 1 <= m <= kGemvMaxRows and F16/BF16/F32
// weights, one warp per weight row, F32 accumulation. Reads every weight once: the decode path.
constexpr int64_t kGemvMaxRows = 8;
cudaError_t LaunchGemv(const float* x, const void* w, Storage w_type, float* y, int64_t m,
                       int64_t n, int64_t k, bool accumulate, cudaStream_t stream);

// vocab_reductions.cu: one block per row of logits [n, v].
cudaError_t LaunchArgMax(const float* logits, int64_t n, int64_t v, float* values,
                         int32_t* indices, int64_t index_offset, cudaStream_t stream);
// k rounds of "the best element after the previous one" (descending value, ascending index):
// for small k, no scratch.
constexpr int64_t kTopKSelectMax = 64;
cudaError_t LaunchTopKSelect(const float* logits, int64_t n, int64_t v, int64_t k,
                             float* values, int32_t* indices, int64_t index_offset,
                             cudaStream_t stream);
// Large k: a stable descending radix sort of each row (CUB), then the first k. Scratch bytes for
// one row of `v` come from TopKSortScratchBytes; `scratch` must hold that many.
size_t TopKSortScratchBytes(int64_t v);
cudaError_t LaunchTopKSort(const float* logits, int64_t n, int64_t v, int64_t k, float* values,
                           int32_t* indices, int64_t index_offset, void* scratch,
                           size_t scratch_bytes, cudaStream_t stream);
cudaError_t LaunchSoftmaxStats(const float* logits, int64_t n, int64_t v, float* max,
                               float* sum_exp, float* sum_exp_shifted, cudaStream_t stream);

// probes.cu: sums `count` floats (count a multiple of 4, data 16-byte aligned) with vectorised
// loads into *sink, for the read-bandwidth probe.
cudaError_t LaunchReadProbe(const float* data, int64_t count, float* sink, int sm_count,
                            cudaStream_t stream);

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_LAUNCHERS_H_
