// The sparse attention variants on the GPU, with the semantics of the CPU reference kernel
// (kernels/cpu/sparse_attention.cc, shared/specs/top_theta.md §1, §3, §4, §7.4).
//
// One block of kThreads per (token, KV head) item; the group's query heads run one after
// another. Per head: the scores of the row's n visible keys into the item's scratch row, the
// row max (and the latest index holding it), the k-th / (k+1)-th largest score by a radix select
// over order-preserving 32-bit keys (four 8-bit passes with a shared histogram, exact), the kept
// set (Top-theta's strict comparison, Top-k with its ties filled from the latest column,
// cap_k's k latest survivors, the empty-row rule) with "how many to the right" ranks from a
// block-wide suffix count, the sums and compensation, then the weighted sum of the kept V rows
// only: V row j is read when some head of the group keeps j, once per head that keeps it.
// Sums are block reductions, so results differ from the CPU kernel in the last bits only.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxHeadDim = 128;

__device__ __forceinline__ unsigned OrderedKey(float x) {
  const unsigned u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float FromOrderedKey(unsigned key) {
  const unsigned u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  return __uint_as_float(u);
}

// Block-wide sum and max of one value per thread (every thread gets the result).
__device__ float BlockSum(float v, float* red) {
  v = WarpSum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += red[w];
  return total;
}
__device__ int BlockCount(int v, int* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  int total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += red[w];
  return total;
}

// The r-th largest (1-based, r <= len) of s[0..len), exact: four 8-bit radix passes.
__device__ float SelectLargest(const float* s, int64_t len, int64_t r, unsigned* hist,
                               unsigned* shared_word) {
  unsigned prefix = 0, mask = 0;
  int64_t remaining = r;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < len; j += kThreads) {
      const unsigned key = OrderedKey(s[j]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t above = 0;
      int bin = 255;
      for (; bin > 0; --bin) {
        if (above + hist[bin] >= remaining) break;
        above += hist[bin];
      }
      shared_word[0] = static_cast<unsigned>(bin);
      shared_word[1] = static_cast<unsigned>(above);
    }
    __syncthreads();
    remaining -= shared_word[1];
    prefix |= shared_word[0] << shift;
    mask |= 255u << shift;
    __syncthreads();
  }
  return FromOrderedKey(prefix);
}

// For flag rows where (marked[j] & bit) is set, the number of marked columns strictly to the
// right of j, written to rank[j] (an int scratch row): each thread counts a contiguous chunk,
// thread 0 turns the chunk counts into suffix sums.
__device__ void SuffixRanks(const unsigned char* marked, unsigned char bit, int64_t len,
                            int32_t* rank, int* chunk) {
  const int64_t per = (len + kThreads - 1) / kThreads;
  const int64_t c0 = threadIdx.x * per, c1 = min(len, c0 + per);
  int count = 0;
  for (int64_t j = c0; j < c1; ++j) count += (marked[j] & bit) ? 1 : 0;
  chunk[threadIdx.x] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    int right = 0;
    for (int t = kThreads - 1; t >= 0; --t) {
      const int c = chunk[t];
      chunk[t] = right;
      right += c;
    }
  }
  __syncthreads();
  int right = chunk[threadIdx.x];
  for (int64_t j = c1 - 1; j >= c0; --j) {
    rank[j] = right;
    if (marked[j] & bit) ++right;
  }
  __syncthreads();
}

constexpr unsigned char kKeep = 1, kTopK = 2, kNeeded = 4, kTie = 8;

template <typename T>
__global__ void __launch_bounds__(kThreads) SparseAttentionKernel(const SparseAttentionParams p) {
  __shared__ float q[kMaxHeadDim];
  __shared__ float red[kThreads / 32];
  __shared__ int ired[kThreads / 32];
  __shared__ unsigned hist[256];
  __shared__ unsigned word[2];
  __shared__ int chunk[kThreads];
  __shared__ float best_value[kThreads];
  __shared__ int best_index[kThreads];

  const int64_t item = p.item_begin + blockIdx.x;
  if (item >= p.item_end) return;
  const int64_t i = item / p.kv_heads, g = item % p.kv_heads;
  const int64_t local = blockIdx.x;
  float* s = p.scores + local * p.max_seq;
  unsigned char* flags = p.flags + local * p.max_seq;
  int32_t* rank = p.ranks + local * p.max_seq;
  const int32_t slot = p.slots[i], entry = p.entries[i];
  const int64_t group = p.heads / p.kv_heads, hd = p.head_dim;
  if (slot < 0 || slot >= p.n_slots || entry < 0 || entry >= p.max_seq) {
    if (threadIdx.x == 0) p.error_flags[kAttentionOutOfRange] = 1;
    for (int64_t hh = 0; hh < group; ++hh) {
      const int64_t row = i * p.heads + g * group + hh;
      for (int64_t d = threadIdx.x; d < hd; d += kThreads) p.out[row * hd + d] = NAN;
    }
    return;
  }
  const int64_t len = entry + 1;
  const int64_t kv_stride = p.kv_heads * hd;
  const int64_t base = (static_cast<int64_t>(slot) * p.max_seq * p.kv_heads + g) * hd;
  const T* kb = static_cast<const T*>(p.k_cache) + base;
  const T* vb = static_cast<const T*>(p.v_cache) + base;
  const bool active = p.kind != 0 && p.k > 0 && len > p.k;
  const bool calibrate = p.k > 0 && len > p.k;
  for (int64_t j = threadIdx.x; j < len; j += kThreads) flags[j] = 0;  // kNeeded cleared

  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = g * group + hh, row = i * p.heads + h;
    __syncthreads();
    for (int64_t d = threadIdx.x; d < hd; d += kThreads) q[d] = p.q[row * hd + d];
    __syncthreads();
    // Scores, max and the latest maximum.
    float my_max = -INFINITY;
    int my_arg = -1;
    for (int64_t j = threadIdx.x; j < len; j += kThreads) {
      float dot = 0.0f;
      for (int64_t d = 0; d < hd; ++d) dot = fmaf(q[d], ToFloat(kb[j * kv_stride + d]), dot);
      s[j] = dot * p.scale;
      if (s[j] >= my_max) {
        my_max = s[j];
        my_arg = static_cast<int>(j);
      }
      flags[j] &= kNeeded;
    }
    best_value[threadIdx.x] = my_max;
    best_index[threadIdx.x] = my_arg;
    __syncthreads();
    if (threadIdx.x == 0) {
      float m = -INFINITY;
      int arg = 0;
      for (int t = 0; t < kThreads; ++t) {
        if (best_index[t] >= 0 && (best_value[t] > m || (best_value[t] == m && best_index[t] > arg))) {
          m = best_value[t];
          arg = best_index[t];
        }
      }
      best_value[0] = m;
      best_index[0] = arg;
    }
    __syncthreads();
    const float m = best_value[0];
    const int argmax = best_index[0];
    __syncthreads();
    float t_calib = NAN;
    if (calibrate && p.row_threshold != nullptr) t_calib = SelectLargest(s, len, p.k + 1, hist, word);
    const bool top_k = active && p.kind == 2;
    if (calibrate && (top_k || p.topk_dropped != nullptr)) {
      const float kth = SelectLargest(s, len, p.k, hist, word);
      int above = 0;
      for (int64_t j = threadIdx.x; j < len; j += kThreads) {
        if (s[j] > kth) {
          flags[j] |= kTopK;
          ++above;
        } else if (s[j] == kth) {
          flags[j] |= kTie;
        }
      }
      const int quota = p.k - BlockCount(above, ired);
      SuffixRanks(flags, kTie, len, rank, chunk);
      for (int64_t j = threadIdx.x; j < len; j += kThreads) {
        if ((flags[j] & kTie) && rank[j] < quota) flags[j] |= kTopK;
        flags[j] &= ~kTie;
      }
      __syncthreads();
    }
    const bool theta_rows = active && p.kind == 1;
    float theta = -INFINITY;
    if (theta_rows) {
      const int64_t bin = min(max(len, static_cast<int64_t>(p.bin_begin)),
                              p.bin_begin + p.bins - 1) - p.bin_begin;
      theta = p.thresholds[h * p.bins + bin];
    }
    for (int64_t j = threadIdx.x; j < len; j += kThreads) {
      bool keep = true;
      if (top_k) {
        keep = (flags[j] & kTopK) != 0;
      } else if (theta_rows && !p.post) {
        keep = s[j] > theta;
      }
      if (keep) flags[j] |= kKeep;
    }
    __syncthreads();
    // e_j, Z_all.
    float part = 0.0f;
    for (int64_t j = threadIdx.x; j < len; j += kThreads) {
      s[j] = expf(s[j] - m);
      part += s[j];
    }
    const float sum = BlockSum(part, red);
    const float inv_sum = 1.0f / sum;
    if (theta_rows && p.post) {
      for (int64_t j = threadIdx.x; j < len; j += kThreads) {
        if (s[j] * inv_sum > theta) {
          flags[j] |= kKeep;
        } else {
          flags[j] &= ~kKeep;
        }
      }
      __syncthreads();
    }
    int count = theta_rows || top_k ? 0 : static_cast<int>(len);
    if (theta_rows || top_k) {
      int mine = 0;
      for (int64_t j = threadIdx.x; j < len; j += kThreads) mine += (flags[j] & kKeep) ? 1 : 0;
      count = BlockCount(mine, ired);
    }
    if (theta_rows && p.cap_k && count > p.k) {
      SuffixRanks(flags, kKeep, len, rank, chunk);
      for (int64_t j = threadIdx.x; j < len; j += kThreads) {
        if ((flags[j] & kKeep) && rank[j] >= p.k) flags[j] &= ~kKeep;
      }
      count = p.k;
      __syncthreads();
    }
    if (theta_rows && count == 0 && !p.empty_row_zero) {
      if (threadIdx.x == 0) flags[argmax] |= kKeep;
      count = 1;
      __syncthreads();
    }
    float d_part = 0.0f, dropped_part = 0.0f, topk_dropped_part = 0.0f;
    for (int64_t j = threadIdx.x; j < len; j += kThreads) {
      if (flags[j] & kKeep) {
        d_part += s[j];
      } else {
        dropped_part += s[j];
      }
      if (!(flags[j] & kTopK)) topk_dropped_part += s[j];
    }
    const float d = BlockSum(d_part, red);
    const float dropped = BlockSum(dropped_part, red);
    const float topk_dropped = BlockSum(topk_dropped_part, red);
    float weight_scale = inv_sum, lost = 0.0f, lse = m + logf(sum);
    if (active && !p.post) {
      float missing = 0.0f;
      if (p.sdc == 1) missing = dropped;
      if (p.sdc == 2) missing = static_cast<float>(len - count) * expf(theta - m);
      if (p.sdc == 3) {
        const int64_t bin = min(max(len, static_cast<int64_t>(p.bin_begin)),
                                p.bin_begin + p.mass_bins - 1) - p.bin_begin;
        missing = p.missing_mass[h * p.mass_bins + bin];
      }
      const float scaled = p.sdc_scale * missing, z = d + scaled;
      weight_scale = z > 0.0f ? 1.0f / z : 0.0f;
      lost = z > 0.0f ? scaled * weight_scale : 1.0f;
      lse = m + logf(z);
    } else if (active) {
      lost = dropped * inv_sum;
    }
    // The weighted sum over the kept V rows only (thread d owns output dimension d).
    for (int64_t c = threadIdx.x; c < hd; c += kThreads) {
      float acc = 0.0f, mean = 0.0f;
      for (int64_t j = 0; j < len; ++j) {
        if (flags[j] & kKeep) acc = fmaf(s[j] * weight_scale, ToFloat(vb[j * kv_stride + c]), acc);
      }
      if (active && p.vmc && lost != 0.0f) {
        for (int64_t j = 0; j < len; ++j) mean += ToFloat(vb[j * kv_stride + c]);
        acc = fmaf(lost, mean / static_cast<float>(len), acc);
      }
      p.out[row * hd + c] = acc;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < len; j += kThreads) {
      if (flags[j] & kKeep) flags[j] |= kNeeded;
    }
    if (threadIdx.x == 0) {
      if (p.lse != nullptr) p.lse[row] = lse;
      if (p.kept != nullptr) p.kept[row] = count;
      if (p.row_threshold != nullptr) {
        p.row_threshold[row] = calibrate && p.post ? expf(t_calib - m) * inv_sum : t_calib;
      }
      if (p.topk_dropped != nullptr) p.topk_dropped[row] = calibrate ? topk_dropped : NAN;
    }
  }
  __syncthreads();
  if (p.kept_vrows != nullptr) {
    int mine = 0;
    for (int64_t j = threadIdx.x; j < len; j += kThreads) mine += (flags[j] & kNeeded) ? 1 : 0;
    const int total = BlockCount(mine, ired);
    if (threadIdx.x == 0) p.kept_vrows[i * p.kv_heads + g] = total;
  }
}

}  // namespace

cudaError_t LaunchSparseAttention(const SparseAttentionParams& p, cudaStream_t stream) {
  if (p.head_dim > kMaxHeadDim || p.item_end <= p.item_begin) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(p.item_end - p.item_begin));
  switch (p.cache_type) {
    case Storage::kF16:
      SparseAttentionKernel<__half><<<grid, kThreads, 0, stream>>>(p);
      break;
    case Storage::kBF16:
      SparseAttentionKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p);
      break;
    default:
      SparseAttentionKernel<float><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda
