// CudaBackend's ops other than GEMM: argument plumbing from the validated Args structs to the
// kernel launchers (launchers.h), with errors naming the op and its shapes.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_ops_util.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launchers.h"

namespace tessera {

using cuda::Describe;

absl::Status CudaBackend::DoEmbedding(const EmbeddingArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("Embedding", {{"ids", a.ids}, {"table", a.table}, {"out", a.out}}));
  const int64_t n = a.ids.dim(0), rows = a.table.dim(0), dim = a.table.dim(1);
  if (n == 0 || dim == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchEmbedding(a.ids.as<const int32_t>(), a.table.data, cuda::StorageOf(a.table.dtype),
                            rows, dim, a.vocab_start, a.out.as<float>(), n, stream_),
      Describe("Embedding", {{"ids", a.ids}, {"table", a.table}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoRmsNorm(const RmsNormArgs& a) {
  RETURN_IF_ERROR(
      cuda::RequireDevice("RmsNorm", {{"in", a.in}, {"weight", a.weight}, {"out", a.out}}));
  const int64_t n = a.in.dim(0), dim = a.in.dim(1);
  if (n == 0 || dim == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cuda::LaunchRmsNorm(a.in.as<const float>(), a.weight.data,
                                           cuda::StorageOf(a.weight.dtype), a.out.as<float>(), n,
                                           dim, a.eps, stream_),
                       Describe("RmsNorm", {{"in", a.in}, {"weight", a.weight}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoRope(const RopeArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice(
      "Rope", {{"x", a.x}, {"positions", a.positions}, {"inv_freq", a.inv_freq}}));
  if (a.x.numel() == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchRope(a.x.as<float>(), a.positions.as<const int32_t>(),
                       a.inv_freq.as<const float>(), a.x.dim(0), a.x.dim(1), a.x.dim(2),
                       a.attention_scaling, stream_),
      Describe("Rope", {{"x", a.x}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoKvWrite(const KvWriteArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("KvWrite", {{"k", a.k},
                                                  {"v", a.v},
                                                  {"k_cache", a.k_cache},
                                                  {"v_cache", a.v_cache},
                                                  {"slots", a.slots},
                                                  {"entries", a.entries}}));
  const int64_t n = a.k.dim(0), row = a.k.row_size();
  if (n == 0 || row == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchKvWrite(a.k.as<const float>(), a.v.as<const float>(), a.k_cache.data,
                          a.v_cache.data, cuda::StorageOf(a.k_cache.dtype),
                          a.slots.as<const int32_t>(), a.entries.as<const int32_t>(), n,
                          a.k_cache.dim(0), a.k_cache.dim(1), row, error_flags_device_, stream_),
      Describe("KvWrite", {{"k", a.k}, {"k_cache", a.k_cache}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoGatherRows(const GatherRowsArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice(
      "GatherRows", {{"in", a.in}, {"indices", a.indices}, {"out", a.out}}));
  const int64_t m = a.indices.dim(0);
  if (m == 0 || a.in.row_bytes() == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchGatherRows(a.in.data, a.in.dim(0), a.indices.as<const int32_t>(), m, a.out.data,
                             static_cast<int64_t>(a.in.row_bytes()), error_flags_device_, stream_),
      Describe("GatherRows", {{"in", a.in}, {"out", a.out}}));
  return absl::OkStatus();
}

namespace {

// The fields AttentionParams and SparseAttentionParams share, from the op's arguments.
template <typename Params>
void FillAttentionParams(const AttentionArgs& a, int* error_flags, Params* p) {
  p->q = a.q.as<const float>();
  p->k_cache = a.k_cache.data;
  p->v_cache = a.v_cache.data;
  p->cache_type = cuda::StorageOf(a.k_cache.dtype);
  p->slots = a.slots.as<const int32_t>();
  p->entries = a.entries.as<const int32_t>();
  p->out = a.out.as<float>();
  p->lse = a.lse.empty() ? nullptr : a.lse.as<float>();
  p->n = a.q.dim(0);
  p->heads = a.q.dim(1);
  p->kv_heads = a.k_cache.dim(2);
  p->head_dim = a.q.dim(2);
  p->n_slots = a.k_cache.dim(0);
  p->max_seq = a.k_cache.dim(1);
  p->scale = a.scale;
  p->error_flags = error_flags;
}

}  // namespace

absl::Status CudaBackend::DoAttention(const AttentionArgs& a) {
  if (a.variant.sparse() || a.variant.has_outputs()) return SparseAttention(a);
  RETURN_IF_ERROR(cuda::RequireDevice("Attention", {{"q", a.q},
                                                    {"k_cache", a.k_cache},
                                                    {"v_cache", a.v_cache},
                                                    {"slots", a.slots},
                                                    {"entries", a.entries},
                                                    {"out", a.out},
                                                    {"lse", a.lse}}));
  const int64_t n = a.q.dim(0), heads = a.q.dim(1), head_dim = a.q.dim(2);
  if (!cuda::AttentionSupportsHeadDim(head_dim)) {
    return absl::UnimplementedError(absl::StrCat(
        "Attention: the CUDA backend supports head_dim 8, 16, 32, 64, 80, 96 and 128, got ", head_dim));
  }
  if (n == 0 || heads == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  cuda::AttentionParams p;
  FillAttentionParams(a, error_flags_device_, &p);
  const int splits = AttentionSplits(n, heads, p.kv_heads, p.max_seq);
  if (splits > 1) {
    const int64_t per = (p.max_seq + splits - 1) / splits;
    p.split_keys = (per + 31) / 32 * 32;
    p.splits = static_cast<int>((p.max_seq + p.split_keys - 1) / p.split_keys);
    const size_t rows = static_cast<size_t>(p.splits) * n * heads;
    ASSIGN_OR_RETURN(void* scratch,
                     ScratchBuffer(Scratch::kAttention, rows * (head_dim + 1) * sizeof(float),
                                   "Attention (split-KV partial states)"));
    p.partial_out = static_cast<float*>(scratch);
    p.partial_lse = p.partial_out + rows * head_dim;
  } else {
    p.splits = 1;
    p.split_keys = p.max_seq;
  }
  CUDA_RETURN_IF_ERROR(cuda::LaunchAttention(p, stream_),
                       absl::StrCat(Describe("Attention", {{"q", a.q}, {"k_cache", a.k_cache}}),
                                    " splits=", p.splits));
  return absl::OkStatus();
}

// The sparse variants (kernels/cuda/sparse_attention.cu), in chunks of (token, KV head) items
// whose scratch (9 bytes per cache row per item) fits in 64 MiB.
absl::Status CudaBackend::SparseAttention(const AttentionArgs& a) {
  const AttentionVariant& v = a.variant;
  RETURN_IF_ERROR(cuda::RequireDevice("Attention (sparse)", {{"q", a.q},
                                                             {"k_cache", a.k_cache},
                                                             {"v_cache", a.v_cache},
                                                             {"slots", a.slots},
                                                             {"entries", a.entries},
                                                             {"out", a.out},
                                                             {"lse", a.lse},
                                                             {"thresholds", v.thresholds},
                                                             {"missing_mass", v.missing_mass},
                                                             {"kept", v.kept},
                                                             {"kept_vrows", v.kept_vrows},
                                                             {"row_threshold", v.row_threshold},
                                                             {"topk_dropped", v.topk_dropped}}));
  const int64_t n = a.q.dim(0), heads = a.q.dim(1), head_dim = a.q.dim(2);
  if (head_dim > 128) {
    return absl::UnimplementedError(absl::StrCat(
        "Attention: the CUDA sparse variants support head_dim up to 128, got ", head_dim));
  }
  if (n == 0 || heads == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  cuda::SparseAttentionParams p;
  FillAttentionParams(a, error_flags_device_, &p);
  p.kind = static_cast<int>(v.kind);
  p.post = v.placement == AttentionVariant::Placement::kPostSoftmax;
  p.sdc = static_cast<int>(v.sdc);
  p.sdc_scale = v.sdc_scale;
  p.vmc = v.vmc;
  p.cap_k = v.cap_k;
  p.empty_row_zero = v.empty_row_zero;
  p.k = v.k;
  p.bin_begin = v.bin_begin;
  p.thresholds = v.thresholds.empty() ? nullptr : v.thresholds.as<const float>();
  p.bins = v.thresholds.empty() ? 1 : v.thresholds.dim(1);
  p.missing_mass = v.missing_mass.empty() ? nullptr : v.missing_mass.as<const float>();
  p.mass_bins = v.missing_mass.empty() ? 1 : v.missing_mass.dim(1);
  p.kept = v.kept.empty() ? nullptr : v.kept.as<int32_t>();
  p.kept_vrows = v.kept_vrows.empty() ? nullptr : v.kept_vrows.as<int32_t>();
  p.row_threshold = v.row_threshold.empty() ? nullptr : v.row_threshold.as<float>();
  p.topk_dropped = v.topk_dropped.empty() ? nullptr : v.topk_dropped.as<float>();
  const int64_t items = n * p.kv_heads;
  const int64_t per_item = p.max_seq * 9;
  const int64_t chunk =
      std::max<int64_t>(1, std::min<int64_t>(items, (int64_t{64} << 20) / per_item));
  ASSIGN_OR_RETURN(void* scratch, ScratchBuffer(Scratch::kAttention, chunk * per_item,
                                                "Attention (sparse variant scratch)"));
  p.scores = static_cast<float*>(scratch);
  p.ranks = reinterpret_cast<int32_t*>(p.scores + chunk * p.max_seq);
  p.flags = reinterpret_cast<unsigned char*>(p.ranks + chunk * p.max_seq);
  for (int64_t begin = 0; begin < items; begin += chunk) {
    p.item_begin = begin;
    p.item_end = std::min(items, begin + chunk);
    CUDA_RETURN_IF_ERROR(cuda::LaunchSparseAttention(p, stream_),
                         Describe("Attention (sparse)", {{"q", a.q}, {"k_cache", a.k_cache}}));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::DoMergeAttention(const MergeAttentionArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("MergeAttention", {{"out_a", a.out_a},
                                                         {"lse_a", a.lse_a},
                                                         {"out_b", a.out_b},
                                                         {"lse_b", a.lse_b},
                                                         {"out", a.out},
                                                         {"lse_out", a.lse_out}}));
  const int64_t rows = a.out_a.dim(0) * a.out_a.dim(1), head_dim = a.out_a.dim(2);
  if (rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchMergeAttention(a.out_a.as<const float>(), a.lse_a.as<const float>(),
                                 a.out_b.as<const float>(), a.lse_b.as<const float>(),
                                 a.out.as<float>(), a.lse_out.as<float>(), rows, head_dim, stream_),
      Describe("MergeAttention", {{"out_a", a.out_a}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoSiluMul(const SiluMulArgs& a) {
  RETURN_IF_ERROR(
      cuda::RequireDevice("SiluMul", {{"gate", a.gate}, {"up", a.up}, {"out", a.out}}));
  const int64_t count = a.gate.numel();
  if (count == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cuda::LaunchSiluMul(a.gate.as<const float>(), a.up.as<const float>(),
                                           a.out.as<float>(), count, stream_),
                       Describe("SiluMul", {{"gate", a.gate}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoAdd(const AddArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("Add", {{"a", a.a}, {"b", a.b}, {"out", a.out}}));
  const int64_t count = a.a.numel();
  if (count == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cuda::LaunchAdd(a.a.as<const float>(), a.b.as<const float>(),
                                       a.out.as<float>(), count, stream_),
                       Describe("Add", {{"a", a.a}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoAverage(const AverageArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("Average", {{"a", a.a}, {"b", a.b}, {"out", a.out}}));
  const int64_t count = a.a.numel();
  if (count == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cuda::LaunchAverage(a.a.data, a.b.data, a.out.data,
                                           cuda::StorageOf(a.a.dtype), count, stream_),
                       Describe("Average", {{"a", a.a}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoKeyScores(const KeyScoresArgs& a) {
  RETURN_IF_ERROR(
      cuda::RequireDevice("KeyScores", {{"q", a.q}, {"k_cache", a.k_cache}, {"out", a.out}}));
  const int64_t count = a.out.dim(0);
  if (count == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  const int64_t kv_heads = a.k_cache.dim(2), head_dim = a.k_cache.dim(3);
  const int64_t slot_base = static_cast<int64_t>(a.slot) * a.k_cache.dim(1) * kv_heads * head_dim;
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchKeyScores(a.q.as<const float>(), a.k_cache.data, cuda::StorageOf(a.k_cache.dtype),
                            slot_base, count, a.q.dim(0), kv_heads, head_dim, a.scale,
                            a.out.as<float>(), stream_),
      Describe("KeyScores", {{"q", a.q}, {"k_cache", a.k_cache}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoLerp(const LerpArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("Lerp", {{"a", a.a}, {"b", a.b}, {"out", a.out}}));
  const int64_t count = a.a.numel();
  if (count == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cuda::LaunchLerp(a.a.as<const float>(), a.b.as<const float>(),
                                        a.out.as<float>(), a.weight, count, stream_),
                       Describe("Lerp", {{"a", a.a}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoPhiloxDropout(const PhiloxDropoutArgs& a) {
  RETURN_IF_ERROR(
      cuda::RequireDevice("PhiloxDropout", {{"x", a.x}, {"row_words", a.row_words}}));
  if (a.x.numel() == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchPhiloxDropout(a.x.as<float>(), a.row_words.as<const uint32_t>(), a.x.dim(0),
                                a.x.dim(1), a.column_offset, a.stream, a.rate, stream_),
      Describe("PhiloxDropout", {{"x", a.x}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoCast(const CastArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("Cast", {{"in", a.in}, {"out", a.out}}));
  const int64_t count = a.in.numel();
  if (count == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cuda::LaunchCast(a.in.data, cuda::StorageOf(a.in.dtype), a.out.data,
                                        cuda::StorageOf(a.out.dtype), count, stream_),
                       Describe("Cast", {{"in", a.in}, {"out", a.out}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoArgMax(const ArgMaxArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice(
      "ArgMax", {{"logits", a.logits}, {"values", a.values}, {"indices", a.indices}}));
  const int64_t n = a.logits.dim(0), v = a.logits.dim(1);
  if (n == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cuda::LaunchArgMax(a.logits.as<const float>(), n, v, a.values.as<float>(),
                                          a.indices.as<int32_t>(), a.index_offset, stream_),
                       Describe("ArgMax", {{"logits", a.logits}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoTopK(const TopKArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice(
      "TopK", {{"logits", a.logits}, {"values", a.values}, {"indices", a.indices}}));
  const int64_t n = a.logits.dim(0), v = a.logits.dim(1), k = a.values.dim(1);
  if (n == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  const absl::string_view op = "TopK";
  if (k <= cuda::kTopKSelectMax) {
    CUDA_RETURN_IF_ERROR(
        cuda::LaunchTopKSelect(a.logits.as<const float>(), n, v, k, a.values.as<float>(),
                               a.indices.as<int32_t>(), a.index_offset, stream_),
        Describe(op, {{"logits", a.logits}, {"values", a.values}}));
    return absl::OkStatus();
  }
  const size_t bytes = cuda::TopKSortScratchBytes(v);
  ASSIGN_OR_RETURN(void* scratch, ScratchBuffer(Scratch::kTopK, bytes, "TopK (radix sort)"));
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchTopKSort(a.logits.as<const float>(), n, v, k, a.values.as<float>(),
                           a.indices.as<int32_t>(), a.index_offset, scratch,
                           scratch_->bytes(static_cast<int>(Scratch::kTopK)), stream_),
      Describe(op, {{"logits", a.logits}, {"values", a.values}}));
  return absl::OkStatus();
}

absl::Status CudaBackend::DoSoftmaxStats(const SoftmaxStatsArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("SoftmaxStats", {{"logits", a.logits},
                                                       {"max", a.max},
                                                       {"sum_exp", a.sum_exp},
                                                       {"sum_exp_shifted", a.sum_exp_shifted}}));
  const int64_t n = a.logits.dim(0), v = a.logits.dim(1);
  if (n == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(
      cuda::LaunchSoftmaxStats(a.logits.as<const float>(), n, v, a.max.as<float>(),
                               a.sum_exp.as<float>(), a.sum_exp_shifted.as<float>(), stream_),
      Describe("SoftmaxStats", {{"logits", a.logits}}));
  return absl::OkStatus();
}

}  // namespace tessera
