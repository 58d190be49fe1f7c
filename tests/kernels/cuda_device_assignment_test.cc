// The distinct-device check the launcher runs on gathered (host, PCI bus id) pairs. Needs no GPU.
#include "kernels/cuda/device_assignment.h"

#include "gtest/gtest.h"

namespace tessera::cuda {
namespace {

TEST(CheckDistinctDevicesTest, DistinctDevicesAndHostsPass) {
  EXPECT_TRUE(CheckDistinctDevices({"a", "a", "b", "b"},
                                   {"0000:3b:00.0", "0000:5e:00.0", "0000:3b:00.0", "0000:5e:00.0"})
                  .ok());
  EXPECT_TRUE(CheckDistinctDevices({}, {}).ok());
}

TEST(CheckDistinctDevicesTest, TwoRanksOnOneDeviceAreRefusedWithTheFix) {
  const absl::Status s = CheckDistinctDevices({"node1", "node1", "node1"},
                                              {"0000:3b:00.0", "0000:5e:00.0", "0000:3b:00.0"});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("ranks 0, 2 on host node1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("0000:3b:00.0"), std::string::npos) << s;
  EXPECT_NE(s.message().find("CUDA_VISIBLE_DEVICES"), std::string::npos) << s;
}

TEST(CheckDistinctDevicesTest, MismatchedInputsAreInvalid) {
  EXPECT_EQ(CheckDistinctDevices({"a"}, {}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::cuda
