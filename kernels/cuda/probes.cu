// The device read-bandwidth probe's kernel: a grid-stride sum of 16-byte loads, so the timed
// kernel does nothing but stream the buffer from device memory.
#include "kernels/cuda/device_utils.cuh"

namespace tessera::cuda {
namespace {

__global__ void ReadProbeKernel(const float4* data, int64_t count4, float* sink) {
  float acc = 0.0f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 v = __ldcs(data + i);
    acc += v.x + v.y + v.z + v.w;
  }
  acc = WarpSum(acc);
  // Never true for the probe's data; keeps the loads from being optimised away.
  if ((threadIdx.x & 31) == 0 && acc == -1.0f) *sink = acc;
}

}  // namespace

cudaError_t LaunchReadProbe(const float* data, int64_t count, float* sink, int sm_count,
                            cudaStream_t stream) {
  constexpr int kThreads = 512;
  const unsigned grid = static_cast<unsigned>(sm_count > 0 ? sm_count * 4 : 1024);
  ReadProbeKernel<<<grid, kThreads, 0, stream>>>(reinterpret_cast<const float4*>(data),
                                                 count / 4, sink);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
