// The check that no two ranks of a job share a GPU, on data the launcher gathers from every
// rank (kernels/ does not depend on parallel/, so the gathering stays in the launcher):
//
//   // launcher, after CudaBackend::Create(local_rank) on every rank:
//   //   all-gather (host name, backend->pci_bus_id()) over the world communicator, then
//   RETURN_IF_ERROR(cuda::CheckDistinctDevices(hosts, bus_ids));
//
// A PCI bus id names one physical GPU of a host whatever CUDA_VISIBLE_DEVICES says, so ranks
// whose visible sets differ (one GPU each, as Slurm's --gpus-per-task gives) are compared
// correctly.
#ifndef TESSERA_KERNELS_CUDA_DEVICE_ASSIGNMENT_H_
#define TESSERA_KERNELS_CUDA_DEVICE_ASSIGNMENT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tessera::cuda {

// hosts[r] and pci_bus_ids[r] are rank r's host name and CudaBackend::pci_bus_id(). OK when no
// two ranks of one host share a bus id; otherwise FailedPrecondition naming the host, the
// device, every rank on it, and the fix.
absl::Status CheckDistinctDevices(const std::vector<std::string>& hosts,
                                  const std::vector<std::string>& pci_bus_ids);

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_DEVICE_ASSIGNMENT_H_
