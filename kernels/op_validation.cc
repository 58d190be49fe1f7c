#include "kernels/op_validation.h"

#include <cmath>
#include <initializer_list>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

constexpr int64_t kAny = -1;

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

// Checks that `v` is present, has `rank` dims matching `dims` (kAny matches anything) and, when
// `weight_types` is false, dtype `dtype`; with `weight_types`, any of F32/F16/BF16.
absl::Status Check(absl::string_view op, absl::string_view arg, const TensorView& v, DType dtype,
                   std::initializer_list<int64_t> dims, bool weight_types = false) {
  auto where = [&] { return absl::StrCat(op, ": ", arg, " "); };
  if (v.data == nullptr && v.numel() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(where(), "has no buffer"));
  }
  if (weight_types ? !IsFloat(v.dtype) : v.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        where(), "has dtype ", DTypeName(v.dtype), ", expected ",
        weight_types ? "F32, F16 or BF16" : std::string(DTypeName(dtype))));
  }
  bool ok = v.rank == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) {
    if (ok && d != kAny && v.shape[i] != d) ok = false;
    ++i;
  }
  if (!ok) {
    std::string want = "[";
    i = 0;
    for (int64_t d : dims) absl::StrAppend(&want, i++ ? ", " : "", d == kAny ? "*" : absl::StrCat(d));
    return absl::InvalidArgumentError(
        absl::StrCat(where(), "has shape ", v.DebugString(), ", expected ", want, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckSameShape(absl::string_view op, const TensorView& a, const TensorView& b) {
  if (a.numel() != b.numel() || a.rank != b.rank) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": shapes differ: ", a.DebugString(),
                                                   " vs ", b.DebugString()));
  }
  for (int i = 0; i < a.rank; ++i) {
    if (a.shape[i] != b.shape[i]) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": shapes differ: ", a.DebugString(),
                                                     " vs ", b.DebugString()));
    }
  }
  return absl::OkStatus();
}

// K and V caches: F32, F16 or BF16, both of one dtype and shape.
absl::Status CheckCache(absl::string_view op, const TensorView& k_cache, const TensorView& v_cache) {
  RETURN_IF_ERROR(Check(op, "k_cache", k_cache, DType::kF32, {kAny, kAny, kAny, kAny}, true));
  RETURN_IF_ERROR(Check(op, "v_cache", v_cache, k_cache.dtype,
                        {k_cache.dim(0), k_cache.dim(1), k_cache.dim(2), k_cache.dim(3)}));
  return absl::OkStatus();
}

}  // namespace

absl::Status Validate(const EmbeddingArgs& a) {
  constexpr absl::string_view op = "Embedding";
  RETURN_IF_ERROR(Check(op, "ids", a.ids, DType::kI32, {kAny}));
  RETURN_IF_ERROR(Check(op, "table", a.table, DType::kF32, {kAny, kAny}, true));
  return Check(op, "out", a.out, DType::kF32, {a.ids.dim(0), a.table.dim(1)});
}

absl::Status Validate(const RmsNormArgs& a) {
  constexpr absl::string_view op = "RmsNorm";
  RETURN_IF_ERROR(Check(op, "in", a.in, DType::kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "weight", a.weight, DType::kF32, {a.in.dim(1)}, true));
  if (!(a.eps > 0)) return absl::InvalidArgumentError("RmsNorm: eps must be positive");
  return Check(op, "out", a.out, DType::kF32, {a.in.dim(0), a.in.dim(1)});
}

absl::Status Validate(const GemmArgs& a) {
  constexpr absl::string_view op = "Gemm";
  RETURN_IF_ERROR(Check(op, "x", a.x, DType::kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "w", a.w, DType::kF32, {kAny, a.x.dim(1)}, true));
  RETURN_IF_ERROR(Check(op, "y", a.y, DType::kF32, {a.x.dim(0), a.w.dim(0)}));
  if (a.x.data == a.y.data && a.x.numel() > 0) {
    return absl::InvalidArgumentError("Gemm: y must not alias x");
  }
  return absl::OkStatus();
}

absl::Status Validate(const RopeArgs& a) {
  constexpr absl::string_view op = "Rope";
  RETURN_IF_ERROR(Check(op, "x", a.x, DType::kF32, {kAny, kAny, kAny}));
  if (a.x.dim(2) % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Rope: head_dim must be even, got ", a.x.dim(2)));
  }
  RETURN_IF_ERROR(Check(op, "positions", a.positions, DType::kI32, {a.x.dim(0)}));
  return Check(op, "inv_freq", a.inv_freq, DType::kF32, {a.x.dim(2) / 2});
}

absl::Status Validate(const KvWriteArgs& a) {
  constexpr absl::string_view op = "KvWrite";
  RETURN_IF_ERROR(CheckCache(op, a.k_cache, a.v_cache));
  int64_t n = a.k.dim(0);
  RETURN_IF_ERROR(Check(op, "k", a.k, DType::kF32, {kAny, a.k_cache.dim(2), a.k_cache.dim(3)}));
  RETURN_IF_ERROR(Check(op, "v", a.v, DType::kF32, {n, a.k_cache.dim(2), a.k_cache.dim(3)}));
  RETURN_IF_ERROR(Check(op, "slots", a.slots, DType::kI32, {n}));
  return Check(op, "entries", a.entries, DType::kI32, {n});
}

// The data of a sparse attention variant: shapes of its tables and outputs, and the
// combinations top_theta.md §5 forbids.
static absl::Status ValidateVariant(const AttentionVariant& v, int64_t n, int64_t heads,
                                    int64_t kv_heads) {
  constexpr absl::string_view op = "Attention (variant)";
  using V = AttentionVariant;
  if (v.k < 0) return absl::InvalidArgumentError(absl::StrCat(op, ": k = ", v.k, " is negative"));
  if (v.sparse() && v.k == 0 && v.kind == V::Kind::kTopK) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": Top-k needs k >= 1"));
  }
  if (v.sdc != V::Compensation::kNone &&
      (v.placement != V::Placement::kPreSoftmax || !v.sparse())) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": a softmax denominator compensation needs a sparse pre-softmax variant"));
  }
  if (v.sdc == V::Compensation::kExpThreshold && v.kind != V::Kind::kTopTheta) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": exp-threshold SDC needs Top-theta"));
  }
  if ((v.cap_k || v.empty_row_zero) && v.kind != V::Kind::kTopTheta) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": cap_k and empty_row_zero need Top-theta"));
  }
  if (v.vmc && !v.sparse()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": vmc needs a sparse variant"));
  }
  if (v.kind == V::Kind::kTopTheta) {
    RETURN_IF_ERROR(Check(op, "thresholds", v.thresholds, DType::kF32, {heads, kAny}));
    if (v.thresholds.dim(1) < 1 || v.bin_begin < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": thresholds need at least one bin and bin_begin >= 1"));
    }
  }
  if (v.sdc == V::Compensation::kOffline) {
    RETURN_IF_ERROR(Check(op, "missing_mass", v.missing_mass, DType::kF32, {heads, kAny}));
    if (v.missing_mass.dim(1) < 1 || v.bin_begin < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": missing_mass needs at least one bin and bin_begin >= 1"));
    }
  }
  if (!v.kept.empty()) RETURN_IF_ERROR(Check(op, "kept", v.kept, DType::kI32, {n, heads}));
  if (!v.kept_vrows.empty()) {
    RETURN_IF_ERROR(Check(op, "kept_vrows", v.kept_vrows, DType::kI32, {n, kv_heads}));
  }
  if (!v.row_threshold.empty()) {
    RETURN_IF_ERROR(Check(op, "row_threshold", v.row_threshold, DType::kF32, {n, heads}));
  }
  if (!v.topk_dropped.empty()) {
    RETURN_IF_ERROR(Check(op, "topk_dropped", v.topk_dropped, DType::kF32, {n, heads}));
  }
  return absl::OkStatus();
}

absl::Status Validate(const AttentionArgs& a) {
  constexpr absl::string_view op = "Attention";
  RETURN_IF_ERROR(CheckCache(op, a.k_cache, a.v_cache));
  RETURN_IF_ERROR(Check(op, "q", a.q, DType::kF32, {kAny, kAny, a.k_cache.dim(3)}));
  int64_t n = a.q.dim(0), heads = a.q.dim(1), kv_heads = a.k_cache.dim(2);
  if (kv_heads == 0 || heads % kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Attention: ", heads, " query heads are not a multiple of ", kv_heads, " KV heads"));
  }
  RETURN_IF_ERROR(Check(op, "slots", a.slots, DType::kI32, {n}));
  RETURN_IF_ERROR(Check(op, "entries", a.entries, DType::kI32, {n}));
  RETURN_IF_ERROR(Check(op, "out", a.out, DType::kF32, {n, heads, a.q.dim(2)}));
  if (!a.lse.empty()) RETURN_IF_ERROR(Check(op, "lse", a.lse, DType::kF32, {n, heads}));
  return ValidateVariant(a.variant, n, heads, kv_heads);
}

absl::Status Validate(const GatherRowsArgs& a) {
  constexpr absl::string_view op = "GatherRows";
  if (a.in.empty() || a.in.rank < 1) {
    return absl::InvalidArgumentError("GatherRows: in must be a tensor of rank >= 1");
  }
  RETURN_IF_ERROR(Check(op, "indices", a.indices, DType::kI32, {kAny}));
  if (a.out.empty() || a.out.rank < 1 || a.out.dtype != a.in.dtype ||
      a.out.dim(0) != a.indices.dim(0) || a.out.row_size() != a.in.row_size() ||
      a.out.device != a.in.device) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GatherRows: out must be [", a.indices.dim(0), " rows of ", a.in.row_size(), " ",
        DTypeName(a.in.dtype), "] on the device of in; got ", a.out.DebugString()));
  }
  const char* in_begin = a.in.as<const char>();
  const char* out_begin = a.out.as<const char>();
  if (out_begin < in_begin + a.in.bytes() && in_begin < out_begin + a.out.bytes()) {
    return absl::InvalidArgumentError("GatherRows: out overlaps in");
  }
  return absl::OkStatus();
}

absl::Status Validate(const MergeAttentionArgs& a) {
  constexpr absl::string_view op = "MergeAttention";
  RETURN_IF_ERROR(Check(op, "out_a", a.out_a, DType::kF32, {kAny, kAny, kAny}));
  int64_t n = a.out_a.dim(0), heads = a.out_a.dim(1), hd = a.out_a.dim(2);
  RETURN_IF_ERROR(Check(op, "out_b", a.out_b, DType::kF32, {n, heads, hd}));
  RETURN_IF_ERROR(Check(op, "out", a.out, DType::kF32, {n, heads, hd}));
  RETURN_IF_ERROR(Check(op, "lse_a", a.lse_a, DType::kF32, {n, heads}));
  RETURN_IF_ERROR(Check(op, "lse_b", a.lse_b, DType::kF32, {n, heads}));
  return Check(op, "lse_out", a.lse_out, DType::kF32, {n, heads});
}

absl::Status Validate(const SiluMulArgs& a) {
  constexpr absl::string_view op = "SiluMul";
  RETURN_IF_ERROR(Check(op, "gate", a.gate, DType::kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "up", a.up, DType::kF32, {a.gate.dim(0), a.gate.dim(1)}));
  return Check(op, "out", a.out, DType::kF32, {a.gate.dim(0), a.gate.dim(1)});
}

absl::Status Validate(const AddArgs& a) {
  if (a.a.dtype != DType::kF32 || a.b.dtype != DType::kF32 || a.out.dtype != DType::kF32) {
    return absl::InvalidArgumentError("Add: all operands must be F32");
  }
  RETURN_IF_ERROR(CheckSameShape("Add", a.a, a.b));
  return CheckSameShape("Add", a.a, a.out);
}

absl::Status Validate(const LerpArgs& a) {
  if (a.a.dtype != DType::kF32 || a.b.dtype != DType::kF32 || a.out.dtype != DType::kF32) {
    return absl::InvalidArgumentError("Lerp: all operands must be F32");
  }
  if (!std::isfinite(a.weight)) {
    return absl::InvalidArgumentError(absl::StrCat("Lerp: weight must be finite, got ", a.weight));
  }
  RETURN_IF_ERROR(CheckSameShape("Lerp", a.a, a.b));
  return CheckSameShape("Lerp", a.a, a.out);
}

absl::Status Validate(const AverageArgs& a) {
  constexpr absl::string_view op = "Average";
  if (a.a.dtype != DType::kF32 && a.a.dtype != DType::kF16 && a.a.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": operands must be F32, F16 or BF16"));
  }
  if (a.b.dtype != a.a.dtype || a.out.dtype != a.a.dtype) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": a, b and out differ in dtype"));
  }
  RETURN_IF_ERROR(CheckSameShape(op, a.a, a.b));
  return CheckSameShape(op, a.a, a.out);
}

absl::Status Validate(const KeyScoresArgs& a) {
  constexpr absl::string_view op = "KeyScores";
  if (a.k_cache.rank != 4 || (a.k_cache.dtype != DType::kF32 && a.k_cache.dtype != DType::kF16 &&
                              a.k_cache.dtype != DType::kBF16)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": k_cache must be [n_slots, max_seq, kv_heads, head_dim] of F32, F16 or BF16"));
  }
  RETURN_IF_ERROR(Check(op, "q", a.q, DType::kF32, {kAny, a.k_cache.dim(3)}));
  const int64_t heads = a.q.dim(0), kv_heads = a.k_cache.dim(2);
  if (kv_heads == 0 || heads % kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", heads, " query heads are not a multiple of ", kv_heads, " KV heads"));
  }
  RETURN_IF_ERROR(Check(op, "out", a.out, DType::kF32, {kAny}));
  if (a.out.dim(0) > a.k_cache.dim(1)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", a.out.dim(0),
                                                   " keys asked for from a cache of ",
                                                   a.k_cache.dim(1), " entries per slot"));
  }
  if (a.slot < 0 || a.slot >= a.k_cache.dim(0)) {
    return absl::OutOfRangeError(absl::StrCat(op, ": slot ", a.slot, " does not exist"));
  }
  return absl::OkStatus();
}

absl::Status Validate(const PhiloxDropoutArgs& a) {
  RETURN_IF_ERROR(Check("PhiloxDropout", "x", a.x, DType::kF32, {kAny, kAny}));
  RETURN_IF_ERROR(
      Check("PhiloxDropout", "row_words", a.row_words, DType::kI32, {a.x.shape[0], 4}));
  if (!(a.rate >= 0.0f && a.rate <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PhiloxDropout: rate must be in [0, 1], got ", a.rate));
  }
  if (a.column_offset < 0 || a.column_offset % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PhiloxDropout: column_offset must be a multiple of 4 and >= 0, got ", a.column_offset));
  }
  return absl::OkStatus();
}

absl::Status Validate(const CastArgs& a) {
  if (!IsFloat(a.in.dtype) || !IsFloat(a.out.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("Cast: converts between F32, F16 and BF16, got ",
                                                   DTypeName(a.in.dtype), " -> ",
                                                   DTypeName(a.out.dtype)));
  }
  if (a.in.numel() != a.out.numel()) {
    return absl::InvalidArgumentError(absl::StrCat("Cast: element counts differ: ",
                                                   a.in.DebugString(), " vs ", a.out.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status Validate(const ArgMaxArgs& a) {
  constexpr absl::string_view op = "ArgMax";
  RETURN_IF_ERROR(Check(op, "logits", a.logits, DType::kF32, {kAny, kAny}));
  if (a.logits.dim(1) == 0) return absl::InvalidArgumentError("ArgMax: empty vocabulary");
  RETURN_IF_ERROR(Check(op, "values", a.values, DType::kF32, {a.logits.dim(0)}));
  return Check(op, "indices", a.indices, DType::kI32, {a.logits.dim(0)});
}

absl::Status Validate(const TopKArgs& a) {
  constexpr absl::string_view op = "TopK";
  RETURN_IF_ERROR(Check(op, "logits", a.logits, DType::kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "values", a.values, DType::kF32, {a.logits.dim(0), kAny}));
  int64_t k = a.values.dim(1);
  if (k < 1 || k > a.logits.dim(1)) {
    return absl::InvalidArgumentError(absl::StrCat("TopK: k=", k, " must be in [1, ",
                                                   a.logits.dim(1), "]"));
  }
  return Check(op, "indices", a.indices, DType::kI32, {a.logits.dim(0), k});
}

absl::Status Validate(const SoftmaxStatsArgs& a) {
  constexpr absl::string_view op = "SoftmaxStats";
  RETURN_IF_ERROR(Check(op, "logits", a.logits, DType::kF32, {kAny, kAny}));
  if (a.logits.dim(1) == 0) return absl::InvalidArgumentError("SoftmaxStats: empty vocabulary");
  int64_t n = a.logits.dim(0);
  RETURN_IF_ERROR(Check(op, "max", a.max, DType::kF32, {n}));
  RETURN_IF_ERROR(Check(op, "sum_exp", a.sum_exp, DType::kF32, {n}));
  return Check(op, "sum_exp_shifted", a.sum_exp_shifted, DType::kF32, {n});
}

}  // namespace tessera
