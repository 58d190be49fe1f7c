// Reductions over a (shard of the) vocabulary, one block per row of logits [n, v]:
// argmax and top-k in the order of op_args.h (descending value, lower index first on ties, NaN
// after every number, so indices are always valid) and the softmax statistics max /
// sum exp(x - max) / sum exp(x - max) * (x - max), the sums in F64 as on the CPU.
#include <cub/device/device_radix_sort.cuh>

#include <climits>

#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

// An element of the order "larger value first, then lower index first".
struct Ranked {
  float v;
  int i;
};

__device__ __forceinline__ bool Before(Ranked a, Ranked b) {
  const bool a_nan = isnan(a.v), b_nan = isnan(b.v);
  if (a_nan || b_nan) return a_nan == b_nan ? a.i < b.i : b_nan;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

// Ranks after every real element, NaN ones included.
__device__ __forceinline__ Ranked Worst() { return {__int_as_float(0x7fc00000), INT_MAX}; }

__device__ Ranked WarpBest(Ranked x) {
  for (int o = 16; o > 0; o >>= 1) {
    Ranked y{__shfl_xor_sync(kFullMask, x.v, o), __shfl_xor_sync(kFullMask, x.i, o)};
    if (Before(y, x)) x = y;
  }
  return x;
}

// The best element of the block, returned to every thread. `shared` holds 32 entries.
__device__ Ranked BlockBest(Ranked x, Ranked* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  x = WarpBest(x);
  __syncthreads();
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  Ranked y = lane < warps ? shared[lane] : Worst();
  return WarpBest(y);
}

__global__ void __launch_bounds__(kThreads)
    ArgMaxKernel(const float* logits, int64_t v, float* values, int32_t* indices,
                 int64_t index_offset) {
  __shared__ Ranked shared[32];
  const float* row = logits + blockIdx.x * v;
  Ranked best = Worst();
  for (int64_t j = threadIdx.x; j < v; j += kThreads) {
    const Ranked c{row[j], static_cast<int>(j)};
    if (Before(c, best)) best = c;
  }
  best = BlockBest(best, shared);
  if (threadIdx.x == 0) {
    values[blockIdx.x] = best.v;
    indices[blockIdx.x] = static_cast<int32_t>(best.i + index_offset);
  }
}

// k rounds; round r selects the best element ranked after the one round r-1 selected.
__global__ void __launch_bounds__(kThreads)
    TopKSelectKernel(const float* logits, int64_t v, int64_t k, float* values, int32_t* indices,
                     int64_t index_offset) {
  __shared__ Ranked shared[32];
  const float* row = logits + blockIdx.x * v;
  Ranked prev{INFINITY, -1};  // ranks before everything
  for (int64_t r = 0; r < k; ++r) {
    Ranked best = Worst();
    bool found = false;
    for (int64_t j = threadIdx.x; j < v; j += kThreads) {
      const Ranked c{row[j], static_cast<int>(j)};
      if (Before(prev, c) && (!found || Before(c, best))) {
        best = c;
        found = true;
      }
    }
    prev = BlockBest(best, shared);
    if (threadIdx.x == 0) {
      values[blockIdx.x * k + r] = prev.v;
      indices[blockIdx.x * k + r] = static_cast<int32_t>(prev.i + index_offset);
    }
  }
}

// Sort inputs for one row: keys with -0 made +0 (the order treats them as equal) and every NaN
// made the negative quiet NaN, which the radix order puts below -inf (a stable sort then keeps
// NaNs in index order), and indices.
__global__ void TopKPrepareKernel(const float* row, int64_t v, float* keys, int32_t* ids) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < v;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = row[j];
    keys[j] = isnan(x) ? __uint_as_float(0xffc00000u) : x == 0.0f ? 0.0f : x;
    ids[j] = static_cast<int32_t>(j);
  }
}

__global__ void TopKTakeKernel(const float* row, const int32_t* sorted_ids, int64_t k,
                               float* values, int32_t* indices, int64_t index_offset) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < k;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t j = sorted_ids[r];
    values[r] = row[j];
    indices[r] = static_cast<int32_t>(j + index_offset);
  }
}

__global__ void __launch_bounds__(kThreads)
    SoftmaxStatsKernel(const float* logits, int64_t v, float* max_out, float* sum_exp,
                       float* sum_exp_shifted) {
  __shared__ float fshared[32];
  __shared__ double dshared[32];
  const float* row = logits + blockIdx.x * v;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) m = fmaxf(m, row[j]);
  m = BlockMax(m, fshared);
  double s = 0.0, shifted = 0.0;
  if (m != -INFINITY) {  // a row of only -inf has no mass (uniform branch: m is block-wide)
    for (int64_t j = threadIdx.x; j < v; j += kThreads) {
      const double d = static_cast<double>(row[j]) - static_cast<double>(m);
      const double e = exp(d);
      if (e == 0.0) continue;  // -inf entries have no weight; d * e would be NaN
      s += e;
      shifted += d * e;
    }
  }
  s = BlockSum(s, dshared);
  shifted = BlockSum(shifted, dshared);
  if (threadIdx.x == 0) {
    max_out[blockIdx.x] = m;
    sum_exp[blockIdx.x] = static_cast<float>(s);
    sum_exp_shifted[blockIdx.x] = static_cast<float>(shifted);
  }
}

size_t Align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t CubTempBytes(int64_t v) {
  size_t temp = 0;
  cub::DeviceRadixSort::SortPairsDescending(nullptr, temp, static_cast<const float*>(nullptr),
                                            static_cast<float*>(nullptr),
                                            static_cast<const int32_t*>(nullptr),
                                            static_cast<int32_t*>(nullptr), static_cast<int>(v));
  return temp;
}

}  // namespace

cudaError_t LaunchArgMax(const float* logits, int64_t n, int64_t v, float* values,
                         int32_t* indices, int64_t index_offset, cudaStream_t stream) {
  ArgMaxKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(logits, v, values, indices,
                                                                  index_offset);
  return cudaGetLastError();
}

cudaError_t LaunchTopKSelect(const float* logits, int64_t n, int64_t v, int64_t k,
                             float* values, int32_t* indices, int64_t index_offset,
                             cudaStream_t stream) {
  TopKSelectKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(logits, v, k, values,
                                                                      indices, index_offset);
  return cudaGetLastError();
}

size_t TopKSortScratchBytes(int64_t v) {
  const size_t array = Align256(static_cast<size_t>(v) * 4);
  return 4 * array + Align256(CubTempBytes(v));
}

cudaError_t LaunchTopKSort(const float* logits, int64_t n, int64_t v, int64_t k, float* values,
                           int32_t* indices, int64_t index_offset, void* scratch,
                           size_t scratch_bytes, cudaStream_t stream) {
  if (scratch_bytes < TopKSortScratchBytes(v)) return cudaErrorInvalidValue;
  const size_t array = Align256(static_cast<size_t>(v) * 4);
  char* base = static_cast<char*>(scratch);
  float* keys_in = reinterpret_cast<float*>(base);
  float* keys_out = reinterpret_cast<float*>(base + array);
  int32_t* ids_in = reinterpret_cast<int32_t*>(base + 2 * array);
  int32_t* ids_out = reinterpret_cast<int32_t*>(base + 3 * array);
  void* temp = base + 4 * array;
  size_t temp_bytes = scratch_bytes - 4 * array;
  for (int64_t r = 0; r < n; ++r) {
    const float* row = logits + r * v;
    TopKPrepareKernel<<<GridFor(v, kThreads), kThreads, 0, stream>>>(row, v, keys_in, ids_in);
    cudaError_t err = cub::DeviceRadixSort::SortPairsDescending(
        temp, temp_bytes, keys_in, keys_out, ids_in, ids_out, static_cast<int>(v), 0, 32, stream);
    if (err != cudaSuccess) return err;
    TopKTakeKernel<<<GridFor(k, kThreads), kThreads, 0, stream>>>(
        row, ids_out, k, values + r * k, indices + r * k, index_offset);
  }
  return cudaGetLastError();
}

cudaError_t LaunchSoftmaxStats(const float* logits, int64_t n, int64_t v, float* max,
                               float* sum_exp, float* sum_exp_shifted, cudaStream_t stream) {
  SoftmaxStatsKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(logits, v, max, sum_exp,
                                                                        sum_exp_shifted);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
