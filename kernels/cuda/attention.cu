// Causal grouped-query attention over the KV cache, for prefill and decode alike.
//
// Tiling. A block owns one KV head g and a tile of kAttentionRowsPerBlock query rows, a row
// being one (token, query head of g's group) pair: with GQA the rows of a tile share g's keys
// and values, which are staged once per tile in shared memory. Keys are processed in tiles of
// 32 (one per lane) with an online softmax (running max, running sum, rescaled accumulator),
// so no score matrix is ever stored: per block, shared memory holds the query rows and one
// 32-key tile of K and V (widened to F32 from an F16 / BF16 cache as they are staged). Each warp
// owns rows {warp, warp + 4, ...} of the tile.
//
// Ragged batches. Rows of a tile may belong to different sequences (cache slots). The block
// makes one pass per distinct slot among its rows; a pass walks keys 0..max(position) of that
// slot and each row masks keys beyond its own position (the causal mask). A prefill tile (one
// sequence) takes one pass; a decode tile of several sequences takes one pass per sequence.
//
// Split-KV (decode). When the query rows alone give too few blocks to fill the GPU and the
// cache is long, grid.z splits the keys into chunks of split_keys; each block writes a partial
// (normalised output, log-sum-exp) for its chunk, and MergeSplitsKernel combines the chunks as
// MergeAttention does. The split is chosen on the host from shapes only (n, heads, max_seq), so
// a captured CUDA graph stays valid as positions advance.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

constexpr int kRows = kAttentionRowsPerBlock;
constexpr int kKeys = 32;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kRows / kWarps;
static_assert(kRows <= 32, "pass masks are 32-bit");

// Output dimension d of a row is held by lane d % 32 in register d / 32; when HD is not a
// multiple of 32 (8, 16, 80) the lanes past the last dimension hold nothing (HasDim).
template <int HD>
__device__ __forceinline__ bool HasDim(int lane, int c) {
  return HD % 32 == 0 || lane + 32 * c < HD;
}

// T: the cache's element type (float, __half, __nv_bfloat16), widened to F32 when a tile of K
// and V is staged in shared memory; everything after staging is F32 whatever T is.
template <int HD, typename T>
__global__ void __launch_bounds__(kThreads) AttentionKernel(const AttentionParams p) {
  constexpr int kDimsPerLane = (HD + 31) / 32;
  __shared__ float qs[kRows][HD];
  __shared__ float ks[kKeys][HD + 1];  // +1: lane j reads row j, conflict-free
  __shared__ float vs[kKeys][HD];
  __shared__ int row_slot[kRows];  // -1: no row here, or an out-of-range token
  __shared__ int row_pos[kRows];
  __shared__ int row_bad[kRows];
  __shared__ long long row_out[kRows];  // t * heads + h, or -1

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t g = blockIdx.y;
  const int64_t group = p.heads / p.kv_heads;
  const int64_t rows_total = p.n * group;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int z = blockIdx.z;

  if (tid < kRows) {
    const int64_t gr = r0 + tid;
    int slot = -1, pos = 0, bad = 0;
    long long orow = -1;
    if (gr < rows_total) {
      const int64_t t = gr / group, h = g * group + gr % group;
      orow = t * p.heads + h;
      const int32_t s = p.slots[t], ps = p.entries[t];
      if (s < 0 || s >= p.n_slots || ps < 0 || ps >= p.max_seq) {
        bad = 1;
        p.error_flags[kAttentionOutOfRange] = 1;
      } else {
        slot = s;
        pos = ps;
      }
    }
    row_slot[tid] = slot;
    row_pos[tid] = pos;
    row_bad[tid] = bad;
    row_out[tid] = orow;
  }
  __syncthreads();
  for (int e = tid; e < kRows * HD; e += kThreads) {
    const int r = e / HD, d = e % HD;
    qs[r][d] = row_out[r] >= 0 ? p.q[row_out[r] * HD + d] : 0.0f;
  }

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) acc[i][c] = 0.0f;
  }

  // Every thread computes the same masks from shared memory, so the loops below are uniform
  // across the block and may contain __syncthreads.
  unsigned pending = 0;
  for (int r = 0; r < kRows; ++r) {
    if (row_slot[r] >= 0) pending |= 1u << r;
  }
  const int64_t split_begin = static_cast<int64_t>(z) * p.split_keys;
  const int64_t kv_stride = p.kv_heads * HD;  // elements between consecutive positions
  while (pending != 0) {
    const int slot = row_slot[__ffs(pending) - 1];
    unsigned pass = 0;
    int64_t keys = 0;  // keys 0..keys-1 of this slot are seen by some row of the pass
    for (int r = 0; r < kRows; ++r) {
      if (((pending >> r) & 1u) && row_slot[r] == slot) {
        pass |= 1u << r;
        keys = max(keys, static_cast<int64_t>(row_pos[r]) + 1);
      }
    }
    pending &= ~pass;
    const int64_t hi = min(keys, split_begin + p.split_keys);
    const int64_t base = (static_cast<int64_t>(slot) * p.max_seq * p.kv_heads + g) * HD;
    const T* kbase = static_cast<const T*>(p.k_cache) + base;
    const T* vbase = static_cast<const T*>(p.v_cache) + base;
    for (int64_t kt = split_begin; kt < hi; kt += kKeys) {
      __syncthreads();  // the previous tile has been consumed
      for (int e = tid; e < kKeys * HD; e += kThreads) {
        const int j = e / HD, d = e % HD;
        const int64_t key = kt + j;
        float kv = 0.0f, vv = 0.0f;
        if (key < hi) {
          kv = ToFloat(kbase[key * kv_stride + d]);
          vv = ToFloat(vbase[key * kv_stride + d]);
        }
        ks[j][d] = kv;
        vs[j][d] = vv;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int r = warp + kWarps * i;
        if (!((pass >> r) & 1u)) continue;
        const int64_t key = kt + lane;
        const bool valid = key < hi && key <= row_pos[r];
        float s = -INFINITY;
        if (valid) {
          float dot = 0.0f;
#pragma unroll 8
          for (int d = 0; d < HD; ++d) dot = fmaf(qs[r][d], ks[lane][d], dot);
          s = dot * p.scale;
        }
        const float tile_max = WarpMax(s);
        if (tile_max == -INFINITY) continue;  // no key of this tile is visible to row r
        const float m_new = fmaxf(m[i], tile_max);
        const float alpha = expf(m[i] - m_new);  // 0 on the first visible tile (m = -inf)
        const float pj = valid ? expf(s - m_new) : 0.0f;
        l[i] = l[i] * alpha + WarpSum(pj);
#pragma unroll
        for (int c = 0; c < kDimsPerLane; ++c) acc[i][c] *= alpha;
        for (int jj = 0; jj < kKeys; ++jj) {
          const float pb = __shfl_sync(kFullMask, pj, jj);
#pragma unroll
          for (int c = 0; c < kDimsPerLane; ++c) {
            if (HasDim<HD>(lane, c)) acc[i][c] = fmaf(pb, vs[jj][lane + 32 * c], acc[i][c]);
          }
        }
        m[i] = m_new;
      }
    }
  }

  const bool split = p.splits > 1;
  const int64_t out_rows = p.n * p.heads;
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + kWarps * i;
    const long long orow = row_out[r];
    if (orow < 0) continue;
    float scale_out, lse;
    if (row_bad[r]) {
      // Out-of-range token: NaN output and lse, split or not (the merge keeps a NaN lse's row
      // NaN); the error is reported by Synchronize.
      scale_out = NAN;
      lse = NAN;
    } else {
      scale_out = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
      lse = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    }
    float* dst = split ? p.partial_out + (z * out_rows + orow) * HD : p.out + orow * HD;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      if (HasDim<HD>(lane, c)) dst[lane + 32 * c] = acc[i][c] * scale_out;
    }
    if (lane == 0) {
      if (split) {
        p.partial_lse[z * out_rows + orow] = lse;
      } else if (p.lse != nullptr) {
        p.lse[orow] = lse;
      }
    }
  }
}

// One warp per output row: out = sum_z w_z o_z / sum_z w_z, w_z = exp(lse_z - max lse). A row
// whose partial lse is NaN (an out-of-range token) stays NaN, as without splitting.
__global__ void MergeSplitsKernel(const float* partial_out, const float* partial_lse, int splits,
                                  int64_t rows, int64_t head_dim, float* out, float* lse) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float m = -INFINITY;
  bool bad = false;
  for (int z = 0; z < splits; ++z) {
    const float lz = partial_lse[z * rows + row];
    bad = bad || isnan(lz);
    m = fmaxf(m, lz);
  }
  if (bad) {
    for (int64_t d = lane; d < head_dim; d += 32) out[row * head_dim + d] = NAN;
    if (lane == 0 && lse != nullptr) lse[row] = NAN;
    return;
  }
  float total = 0.0f;
  for (int z = 0; z < splits; ++z) {
    const float lz = partial_lse[z * rows + row];
    total += lz == -INFINITY ? 0.0f : expf(lz - m);
  }
  for (int64_t d = lane; d < head_dim; d += 32) {
    float a = 0.0f;
    for (int z = 0; z < splits; ++z) {
      const float lz = partial_lse[z * rows + row];
      if (lz == -INFINITY) continue;
      a = fmaf(expf(lz - m), partial_out[(z * rows + row) * head_dim + d], a);
    }
    out[row * head_dim + d] = a / total;
  }
  if (lane == 0 && lse != nullptr) lse[row] = m + logf(total);
}

template <int HD>
void LaunchTiles(const AttentionParams& p, cudaStream_t stream) {
  const int64_t rows_total = p.n * (p.heads / p.kv_heads);
  const dim3 grid(static_cast<unsigned>((rows_total + kRows - 1) / kRows),
                  static_cast<unsigned>(p.kv_heads), static_cast<unsigned>(p.splits));
  switch (p.cache_type) {
    case Storage::kF16:
      AttentionKernel<HD, __half><<<grid, kThreads, 0, stream>>>(p);
      break;
    case Storage::kBF16:
      AttentionKernel<HD, __nv_bfloat16><<<grid, kThreads, 0, stream>>>(p);
      break;
    default:
      AttentionKernel<HD, float><<<grid, kThreads, 0, stream>>>(p);
  }
}

}  // namespace

bool AttentionSupportsHeadDim(int64_t head_dim) {
  switch (head_dim) {
    case 8:
    case 16:
    case 32:
    case 64:
    case 80:
    case 96:
    case 128:
      return true;
    default:
      return false;
  }
}

cudaError_t LaunchAttention(const AttentionParams& p, cudaStream_t stream) {
  if (p.splits < 1 || p.split_keys < 1) return cudaErrorInvalidValue;
  switch (p.head_dim) {
    case 8:
      LaunchTiles<8>(p, stream);
      break;
    case 16:
      LaunchTiles<16>(p, stream);
      break;
    case 32:
      LaunchTiles<32>(p, stream);
      break;
    case 80:
      LaunchTiles<80>(p, stream);
      break;
    case 64:
      LaunchTiles<64>(p, stream);
      break;
    case 96:
      LaunchTiles<96>(p, stream);
      break;
    case 128:
      LaunchTiles<128>(p, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  const int64_t rows = p.n * p.heads;
  constexpr int kMergeWarps = 4;
  MergeSplitsKernel<<<static_cast<unsigned>((rows + kMergeWarps - 1) / kMergeWarps),
                      kMergeWarps * 32, 0, stream>>>(p.partial_out, p.partial_lse, p.splits, rows,
                                                      p.head_dim, p.out, p.lse);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
