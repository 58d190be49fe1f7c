// Malformed op arguments are refused before any backend runs, with the op and argument named.
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace tessera {
namespace {

TEST(OpValidationTest, GemmShapeMismatchNamesTheArgument) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  std::vector<float> x(6), w(12), y(8);
  absl::Status s = backend->Gemm({TensorView::Of(x.data(), DType::kF32, {2, 3}),
                                  TensorView::Of(w.data(), DType::kF32, {3, 4}),
                                  TensorView::Of(y.data(), DType::kF32, {2, 3})});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Gemm: w"), std::string::npos) << s;
  EXPECT_NE(s.message().find("[3, 4]"), std::string::npos) << s;
}

TEST(OpValidationTest, RejectsWrongDtypesAndAliasing) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  std::vector<float> x(4), w(4);
  std::vector<int32_t> ids(2);
  EXPECT_FALSE(backend->Gemm({TensorView::Of(x.data(), DType::kF32, {2, 2}),
                              TensorView::Of(w.data(), DType::kF32, {2, 2}),
                              TensorView::Of(x.data(), DType::kF32, {2, 2})})
                   .ok());
  absl::Status s = backend->Embedding({TensorView::Of(x.data(), DType::kF32, {2}),
                                       TensorView::Of(w.data(), DType::kF32, {2, 2}),
                                       TensorView::Of(x.data(), DType::kF32, {2, 2})});
  EXPECT_NE(s.message().find("ids"), std::string::npos) << s;
  std::vector<float> q(2 * 3 * 4), kc(1 * 4 * 2 * 4), out(q.size());
  std::vector<int32_t> pos(2), sl(2);
  s = backend->Attention({TensorView::Of(q.data(), DType::kF32, {2, 3, 4}),
                          TensorView::Of(kc.data(), DType::kF32, {1, 4, 2, 4}),
                          TensorView::Of(kc.data(), DType::kF32, {1, 4, 2, 4}),
                          TensorView::Of(sl.data(), DType::kI32, {2}),
                          TensorView::Of(pos.data(), DType::kI32, {2}),
                          TensorView::Of(out.data(), DType::kF32, {2, 3, 4})});
  EXPECT_NE(s.message().find("not a multiple"), std::string::npos) << s;
  std::vector<float> odd(3);
  std::vector<int32_t> p1(1);
  std::vector<float> inv(1);
  s = backend->Rope({TensorView::Of(odd.data(), DType::kF32, {1, 1, 3}),
                     TensorView::Of(p1.data(), DType::kI32, {1}),
                     TensorView::Of(inv.data(), DType::kF32, {1})});
  EXPECT_NE(s.message().find("even"), std::string::npos) << s;
}

#if defined(TESSERA_WITH_CUDA)
// A CUDA build constructs the CUDA backend, or says why no device can be used.
TEST(OpValidationTest, CudaBackendIsBuilt) {
  auto backend = MakeBackend(BackendKind::kCuda);
  if (backend.ok()) {
    EXPECT_EQ((*backend)->kind(), BackendKind::kCuda);
    EXPECT_EQ((*backend)->device(), Device::kCuda);
  } else {
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kUnavailable) << backend.status();
    EXPECT_NE(backend.status().message().find("no CUDA device"), std::string::npos)
        << backend.status();
  }
}
#else
TEST(OpValidationTest, CudaBackendIsUnimplementedWithoutCuda) {
  auto backend = MakeBackend(BackendKind::kCuda);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(backend.status().message().find("TESSERA_CUDA"), std::string::npos)
      << backend.status();
}
#endif

}  // namespace
}  // namespace tessera
