// The collective suite on NcclCommunicator, with its buffers in device memory (and once more in
// host memory, through the communicator's staging). Skips, saying so, where no GPU exists.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "parallel/local_communicator.h"
#include "tests/parallel/collective_suite.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::CollectiveSuite;
using testing::SuiteCase;
using testing::SuiteMemory;
using testing::SuiteOptions;

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

// Suite buffers in device memory of `device`.
class CudaMemory final : public SuiteMemory {
 public:
  explicit CudaMemory(int device) : device_(device) {}
  Device device() const override { return Device::kCuda; }
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    cudaSetDevice(device_);
    void* p = nullptr;
    RETURN_IF_ERROR(CudaStatus(cudaMalloc(&p, bytes), "cudaMalloc"));
    return p;
  }
  void Free(void* p) override { cudaFree(p); }
  absl::Status CopyToDevice(void* device, const void* host, size_t bytes) override {
    cudaSetDevice(device_);
    return CudaStatus(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  absl::Status CopyToHost(void* host, const void* device, size_t bytes) override {
    cudaSetDevice(device_);
    return CudaStatus(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }

 private:
  int device_;
};

// Runs every suite case on `n` NCCL ranks (one thread and one GPU each), bootstrapped over a
// LocalCommunicator group, with buffers in device memory or on the host.
void RunSuiteOnGpus(int n, bool device_buffers) {
  auto bootstrap = LocalCommunicator::Create(n, absl::Seconds(60), "world");
  std::vector<std::string> failures(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto nccl = NcclCommunicator::CreateFromMpi(*bootstrap[r], r, absl::Seconds(60));
      if (!nccl.ok()) {
        failures[r] = nccl.status().ToString();
        return;
      }
      CudaMemory cuda(r);
      SuiteOptions options;
      options.tag_matching = false;  // NCCL has no tags and unbuffered sends
      if (device_buffers) options.memory = &cuda;
      for (const SuiteCase& c : CollectiveSuite(options)) {
        const absl::Status status = c.run(**nccl, options);
        if (!status.ok()) absl::StrAppend(&failures[r], "\n", c.name, ": ", status.ToString());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_TRUE(failures[r].empty()) << "rank " << r << failures[r];
}

TEST(NcclCommunicatorTest, SuiteOnOneGpuDeviceBuffers) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device on this machine: NCCL tests skipped";
  RunSuiteOnGpus(1, /*device_buffers=*/true);
}

TEST(NcclCommunicatorTest, SuiteOnOneGpuHostBuffers) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device on this machine: NCCL tests skipped";
  RunSuiteOnGpus(1, /*device_buffers=*/false);
}

TEST(NcclCommunicatorTest, SuiteOnSeveralGpus) {
  const int count = DeviceCount();
  if (count < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << count;
  RunSuiteOnGpus(std::min(count, 4), /*device_buffers=*/true);
}

TEST(NcclCommunicatorTest, RecvFromItselfWithoutSendFails) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device on this machine: NCCL tests skipped";
  auto bootstrap = LocalCommunicator::Create(1, absl::Seconds(30), "tp");
  ASSERT_OK_AND_ASSIGN(auto nccl,
                       NcclCommunicator::CreateFromMpi(*bootstrap[0], 0, absl::Seconds(30)));
  int32_t x = 0;
  const absl::Status status = nccl->Recv(TensorView::Of(&x, DType::kI32, {1}), 0, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "tp rank 0/1: Recv")) << status;
}

TEST(NcclCommunicatorTest, NoDeviceIsAClearErrorOnEveryRank) {
  if (DeviceCount() > 0) GTEST_SKIP() << "a CUDA device exists; this checks the no-GPU path";
  auto bootstrap = LocalCommunicator::Create(2, absl::Seconds(30), "world");
  std::vector<absl::Status> statuses(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      statuses[r] = NcclCommunicator::CreateFromMpi(*bootstrap[r], r, absl::Seconds(30)).status();
    });
  }
  for (std::thread& t : threads) t.join();
  std::printf("  (expected) %s\n", statuses[0].ToString().c_str());
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(statuses[r].code(), absl::StatusCode::kFailedPrecondition) << statuses[r];
    EXPECT_TRUE(absl::StrContains(statuses[r].message(), "rank(s) 0, 1 cannot use a CUDA device"))
        << statuses[r];
    EXPECT_TRUE(absl::StrContains(statuses[r].message(), absl::StrCat("world rank ", r, "/2")))
        << statuses[r];
  }
}

}  // namespace
}  // namespace tessera
