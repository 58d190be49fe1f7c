// Device discovery for the CUDA backend.
#ifndef TESSERA_KERNELS_CUDA_DEVICE_INFO_H_
#define TESSERA_KERNELS_CUDA_DEVICE_INFO_H_

#include "absl/status/statusor.h"

namespace tessera::cuda {

// Number of CUDA devices visible to this process (after CUDA_VISIBLE_DEVICES). Returns
// Unavailable with the driver's message when no driver or device is present.
absl::StatusOr<int> VisibleDeviceCount();

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_DEVICE_INFO_H_
