// MergeAttention: two partial attention states over disjoint key sets combined with their
// log-sum-exps, exactly as the CPU backend: a side with lse = -inf has weight 0. One warp per
// (token, head) row; the row's lse values are read before any lane writes, so out may alias
// out_a and lse_out may alias lse_a.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

__global__ void MergeAttentionKernel(const float* out_a, const float* lse_a, const float* out_b,
                                     const float* lse_b, float* out, float* lse_out, int64_t rows,
                                     int64_t head_dim) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float la = lse_a[row], lb = lse_b[row];
  __syncwarp();  // every lane has read the lse values before lane 0 may overwrite lse_a
  const float m = fmaxf(la, lb);
  const float wa = (isinf(la) && la < 0) ? 0.0f : expf(la - m);
  const float wb = (isinf(lb) && lb < 0) ? 0.0f : expf(lb - m);
  const float total = wa + wb;
  for (int64_t d = lane; d < head_dim; d += 32) {
    const int64_t e = row * head_dim + d;
    out[e] = (wa * out_a[e] + wb * out_b[e]) / total;
  }
  if (lane == 0) lse_out[row] = m + logf(total);
}

}  // namespace

cudaError_t LaunchMergeAttention(const float* out_a, const float* lse_a, const float* out_b,
                                 const float* lse_b, float* out, float* lse_out, int64_t rows,
                                 int64_t head_dim, cudaStream_t stream) {
  constexpr int kWarps = 4;
  MergeAttentionKernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * 32, 0,
                         stream>>>(out_a, lse_a, out_b, lse_b, out, lse_out, rows, head_dim);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
