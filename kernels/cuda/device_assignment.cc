#include "kernels/cuda/device_assignment.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera::cuda {

absl::Status CheckDistinctDevices(const std::vector<std::string>& hosts,
                                  const std::vector<std::string>& pci_bus_ids) {
  if (hosts.size() != pci_bus_ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat("CheckDistinctDevices: ", hosts.size(),
                                                   " hosts but ", pci_bus_ids.size(),
                                                   " bus ids"));
  }
  std::map<std::pair<std::string, std::string>, std::vector<int>> ranks;  // (host, bus) -> ranks
  for (size_t r = 0; r < hosts.size(); ++r) {
    ranks[{hosts[r], pci_bus_ids[r]}].push_back(static_cast<int>(r));
  }
  for (const auto& [where, on_device] : ranks) {
    if (on_device.size() < 2) continue;
    return absl::FailedPreconditionError(absl::StrCat(
        "ranks ", absl::StrJoin(on_device, ", "), " on host ", where.first,
        " all use the GPU at PCI ", where.second,
        "; each rank needs its own GPU: start at most as many ranks per host as it has GPUs "
        "(the CUDA backend takes device local_rank % visible devices), or give each rank its "
        "own CUDA_VISIBLE_DEVICES"));
  }
  return absl::OkStatus();
}

}  // namespace tessera::cuda
