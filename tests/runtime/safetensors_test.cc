// SafetensorsFile / Checkpoint on files written by the test (valid, corrupt, truncated, sharded),
// and LoadLlamaWeights' checks of a checkpoint against its config.json.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/llama_weights.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"
#include "runtime/shard_plan.h"
#include "tests/runtime/test_files.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::FakeTensor;
using testing::F32Tensor;
using testing::RawSafetensors;
using testing::SafetensorsBytes;
using testing::ScopedTempDir;
using testing::WriteFile;
using nlohmann::json;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// ---- SafetensorsFile ----

TEST(SafetensorsFileTest, RoundTrip) {
  ScopedTempDir dir;
  const std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  const std::vector<int32_t> b = {7, -1, 123456};
  const std::vector<uint16_t> c = {0x3f80, 0xc000};  // BF16 1.0, -2.0
  const std::string path = dir.Join("x.safetensors");
  WriteFile(path, SafetensorsBytes({{"a", F32Tensor({2, 3}, a)},
                                    {"b", {"I32", {3}, testing::RawBytes(b)}},
                                    {"c", {"BF16", {1, 2}, testing::RawBytes(c)}}}));
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
  ASSERT_EQ(file->tensors().size(), 3u);  // __metadata__ is not a tensor
  EXPECT_EQ(file->path(), path);

  const TensorEntry& ta = file->tensors().at("a");
  EXPECT_EQ(ta.dtype, DType::kF32);
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta.bytes, 24u);
  const TensorView va = ta.view();
  EXPECT_EQ(va.rank, 2);
  EXPECT_EQ(va.dim(0), 2);
  EXPECT_EQ(va.dim(1), 3);
  EXPECT_EQ(va.dtype, DType::kF32);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(va.as<float>()[i], a[i]) << i;

  const TensorView vb = file->tensors().at("b").view();
  EXPECT_EQ(vb.dtype, DType::kI32);
  EXPECT_EQ(vb.numel(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(vb.as<int32_t>()[i], b[i]) << i;

  const TensorView vc = file->tensors().at("c").view();
  EXPECT_EQ(vc.dtype, DType::kBF16);
  EXPECT_EQ(Bf16ToFloat(vc.as<uint16_t>()[0]), 1.0f);
  EXPECT_EQ(Bf16ToFloat(vc.as<uint16_t>()[1]), -2.0f);
}

TEST(SafetensorsFileTest, MissingFileIsNotFound) {
  ScopedTempDir dir;
  auto file = SafetensorsFile::Open(dir.Join("absent.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(file.status()), HasSubstr(dir.Join("absent.safetensors")));
}

TEST(SafetensorsFileTest, ShorterThanEightBytes) {
  ScopedTempDir dir;
  const std::string path = dir.Join("short.safetensors");
  WriteFile(path, std::string("\x05\x00\x00", 3));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path), HasSubstr("3 bytes"),
                                            HasSubstr("too short")));
}

TEST(SafetensorsFileTest, HeaderLengthBeyondFile) {
  ScopedTempDir dir;
  const std::string path = dir.Join("long_header.safetensors");
  std::string bytes = RawSafetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                     std::string(4, '\0'));
  bytes[0] = static_cast<char>(0x00);
  bytes[1] = static_cast<char>(0x10);  // 4096 bytes of header in a ~70-byte file
  WriteFile(path, bytes);
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path), HasSubstr("header length 4096"), HasSubstr("truncated")));
}

TEST(SafetensorsFileTest, HugeHeaderLength) {
  ScopedTempDir dir;
  const std::string path = dir.Join("huge_header.safetensors");
  WriteFile(path, std::string(8, '\xff') + "{}");
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), HasSubstr(path));
}

TEST(SafetensorsFileTest, HeaderNotJson) {
  ScopedTempDir dir;
  const std::string path = dir.Join("garbage.safetensors");
  WriteFile(path, RawSafetensors("this is not json at all", std::string(16, '\0')));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path), HasSubstr("JSON")));
}

TEST(SafetensorsFileTest, HeaderJsonButNotAnObject) {
  ScopedTempDir dir;
  const std::string path = dir.Join("array.safetensors");
  WriteFile(path, RawSafetensors("[1, 2, 3]", ""));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path), HasSubstr("JSON object")));
}

TEST(SafetensorsFileTest, EntryWithoutDataOffsets) {
  ScopedTempDir dir;
  const std::string path = dir.Join("no_offsets.safetensors");
  WriteFile(path, RawSafetensors(R"({"weight":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path), HasSubstr("\"weight\""), HasSubstr("data_offsets")));
}

TEST(SafetensorsFileTest, TruncatedFile) {
  ScopedTempDir dir;
  const std::string path = dir.Join("truncated.safetensors");
  WriteFile(path, SafetensorsBytes({{"a", F32Tensor({4}, {1, 2, 3, 4})},
                                    {"b", F32Tensor({8}, std::vector<float>(8, 1.0f))}}));
  ASSERT_OK(SafetensorsFile::Open(path).status());  // valid before truncation
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  // "b" holds bytes [16, 48) of the data; 38 data bytes are left.
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path), HasSubstr("\"b\""), HasSubstr("[16, 48]"), HasSubstr("38"),
                    HasSubstr("truncated")));
}

TEST(SafetensorsFileTest, OffsetsSpanDoesNotMatchShape) {
  ScopedTempDir dir;
  const std::string path = dir.Join("span.safetensors");
  // [2, 3] F32 needs 24 bytes; the offsets give 20.
  WriteFile(path, RawSafetensors(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})",
                                 std::string(24, '\0')));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path), HasSubstr("\"w\""), HasSubstr("20"), HasSubstr("24")));
}

TEST(SafetensorsFileTest, ReversedOffsets) {
  ScopedTempDir dir;
  const std::string path = dir.Join("reversed.safetensors");
  WriteFile(path, RawSafetensors(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",
                                 std::string(8, '\0')));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path), HasSubstr("\"w\"")));
}

class UnsupportedDTypeTest : public ::testing::TestWithParam<std::pair<std::string, int>> {};

TEST_P(UnsupportedDTypeTest, NamesDTypeAndTensor) {
  const auto& [dtype, element_bytes] = GetParam();
  ScopedTempDir dir;
  const std::string path = dir.Join("dtype.safetensors");
  WriteFile(path, SafetensorsBytes({{"ok", F32Tensor({1}, {1.0f})},
                                    {"odd_one", {dtype, {2, 2}, std::string(4 * element_bytes, '\0')}}}));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path), HasSubstr("\"odd_one\""), HasSubstr("\"" + dtype + "\""),
                    HasSubstr("F32, F16, BF16")));
}

INSTANTIATE_TEST_SUITE_P(Types, UnsupportedDTypeTest,
                         ::testing::Values(std::make_pair(std::string("F64"), 8),
                                           std::make_pair(std::string("I8"), 1),
                                           std::make_pair(std::string("F8_E4M3"), 1)),
                         [](const auto& info) { return info.param.first; });

TEST(SafetensorsFileTest, NegativeDimension) {
  ScopedTempDir dir;
  const std::string path = dir.Join("negative.safetensors");
  WriteFile(path, RawSafetensors(R"({"w":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})",
                                 std::string(8, '\0')));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path), HasSubstr("\"w\""),
                                            HasSubstr("negative")));
}

TEST(SafetensorsFileTest, NonIntegerDimension) {
  ScopedTempDir dir;
  const std::string path = dir.Join("fraction.safetensors");
  WriteFile(path, RawSafetensors(R"({"w":{"dtype":"F32","shape":[1.5,2],"data_offsets":[0,8]}})",
                                 std::string(8, '\0')));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path), HasSubstr("\"w\""),
                                            HasSubstr("non-integer")));
}

TEST(SafetensorsFileTest, RankAboveFour) {
  ScopedTempDir dir;
  const std::string path = dir.Join("rank5.safetensors");
  WriteFile(path, RawSafetensors(
                      R"({"w":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]}})",
                      std::string(8, '\0')));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr("\"w\""), HasSubstr("4 dimensions")));
}

// ---- What the safetensors reference implementation refuses ----

// Opens a file holding `header` and `data_bytes` zero bytes of data; the error message, or "" if
// the file was accepted.
std::string OpenError(const std::string& header, size_t data_bytes) {
  ScopedTempDir dir;
  const std::string path = dir.Join("x.safetensors");
  WriteFile(path, RawSafetensors(header, std::string(data_bytes, '\0')));
  auto file = SafetensorsFile::Open(path);
  if (file.ok()) return "";
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << file.status();
  EXPECT_THAT(Message(file.status()), HasSubstr(path));
  return Message(file.status());
}

// Two tensors sharing bytes would alias each other's weights.
TEST(SafetensorsValidationTest, OverlappingOffsets) {
  const std::string m = OpenError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                  12);
  ASSERT_FALSE(m.empty()) << "overlapping data_offsets accepted";
  EXPECT_THAT(m, AllOf(HasSubstr("\"b\""), HasSubstr("[4, 12]"), HasSubstr("overlap")));
}

TEST(SafetensorsValidationTest, IdenticalOffsets) {
  const std::string m = OpenError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                  8);
  ASSERT_FALSE(m.empty()) << "two tensors on the same bytes accepted";
  EXPECT_THAT(m, HasSubstr("overlap"));
}

// nlohmann keeps one of the two entries; the reference refuses the header.
TEST(SafetensorsValidationTest, TensorNameTwice) {
  const std::string m = OpenError(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                  16);
  ASSERT_FALSE(m.empty()) << "a tensor named twice accepted";
  EXPECT_THAT(m, AllOf(HasSubstr("\"w\""), HasSubstr("twice")));
}

TEST(SafetensorsValidationTest, FieldTwiceInOneEntry) {
  const std::string m = OpenError(
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"dtype":"F16"}})", 8);
  ASSERT_FALSE(m.empty());
  EXPECT_THAT(m, AllOf(HasSubstr("\"dtype\""), HasSubstr("twice")));
}

TEST(SafetensorsValidationTest, GapBetweenTensors) {
  const std::string m = OpenError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                  20);
  ASSERT_FALSE(m.empty()) << "a gap between tensors accepted";
  EXPECT_THAT(m, AllOf(HasSubstr("\"b\""), HasSubstr("gap")));
}

TEST(SafetensorsValidationTest, DataSectionLongerThanTheTensors) {
  const std::string m =
      OpenError(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12);
  ASSERT_FALSE(m.empty()) << "trailing data bytes accepted";
  EXPECT_THAT(m, AllOf(HasSubstr("8 of the 12")));
}

TEST(SafetensorsValidationTest, EmptyTensorsAndMetadataAreFine) {
  EXPECT_EQ(OpenError(R"({"__metadata__":{"format":"pt"},)"
                      R"("e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                      8),
            "");
}

// Found by safetensors_header_fuzzer: an empty tensor's view divided by its zero first dimension
// to compute the row size (SIGFPE in every kernel that takes rows of it).
TEST(SafetensorsValidationTest, EmptyTensorHasRowsOfItsTrailingDims) {
  ScopedTempDir dir;
  const std::string path = dir.Join("empty.safetensors");
  WriteFile(path, RawSafetensors(R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                                 R"("x":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                                 std::string(8, '\0')));
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
  const TensorView e = file->tensors().at("e").view();
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.row_size(), 4);
  EXPECT_EQ(e.row_bytes(), 16u);
  EXPECT_EQ(e.bytes(), 0u);
}

// A zero dimension made the element count 0, so the other dimensions went unchecked: 2^64 - 1
// became the dimension -1, and dimensions whose product overflows int64 were accepted (found
// while writing safetensors_header_fuzzer's invariants).
TEST(SafetensorsValidationTest, DimensionsBesideAZeroAreBounded) {
  for (const char* shape : {"[0,18446744073709551615]", "[0,4294967296,4294967296]",
                            "[4294967296,0,4294967296]", "[1125899906842625,0]"}) {
    const std::string m = OpenError(
        absl::StrCat(R"({"e":{"dtype":"F32","shape":)", shape, R"(,"data_offsets":[0,0]}})"), 0);
    EXPECT_THAT(m, AllOf(HasSubstr("\"e\""), HasSubstr("impossibly large"))) << shape;
  }
  EXPECT_EQ(OpenError(R"({"e":{"dtype":"F32","shape":[0,1048576,1048576],"data_offsets":[0,0]}})",
                      0),
            "");
}

TEST(SafetensorsValidationTest, MetadataMustMapStringsToStrings) {
  const char* bad[] = {
      R"({"__metadata__":{"format":1},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      R"({"__metadata__":["pt"],"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})"};
  for (const char* header : bad) {
    SCOPED_TRACE(header);
    const std::string m = OpenError(header, 4);
    ASSERT_FALSE(m.empty()) << "malformed __metadata__ accepted";
    EXPECT_THAT(m, HasSubstr("__metadata__"));
  }
}

// A directory where a file belongs: an error naming it (and no exception, no mmap error).
TEST(SafetensorsValidationTest, DirectoryInsteadOfAFile) {
  ScopedTempDir dir;
  std::filesystem::create_directories(dir.Join("x.safetensors"));
  auto file = SafetensorsFile::Open(dir.Join("x.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(dir.Join("x.safetensors")), HasSubstr("is a directory")));
}

// ---- Checkpoint ----
//
// Shards may be opened when the checkpoint is opened or on the first Find() of one of their
// tensors; errors of a shard are accepted from either.

// Opens `dir` and finds each of `names`; the first error.
absl::Status OpenAndFind(const std::string& dir, const std::vector<std::string>& names) {
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();
  for (const std::string& name : names) {
    auto t = (*ckpt)->Find(name);
    if (!t.ok()) return t.status();
  }
  return absl::OkStatus();
}

TEST(CheckpointTest, SingleFile) {
  ScopedTempDir dir;
  WriteFile(dir.Join("model.safetensors"),
            SafetensorsBytes({{"x", F32Tensor({2}, {5.0f, 6.0f})}}));
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(dir.path()));
  EXPECT_TRUE(ckpt->Contains("x"));
  EXPECT_FALSE(ckpt->Contains("y"));
  ASSERT_OK_AND_ASSIGN(const TensorEntry* x, ckpt->Find("x"));
  EXPECT_EQ(x->view().as<float>()[1], 6.0f);
  auto missing = ckpt->Find("y");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), AllOf(HasSubstr("\"y\""), HasSubstr(dir.path())));
}

TEST(CheckpointTest, ShardedFindsTensorsInBothShards) {
  ScopedTempDir dir;
  WriteFile(dir.Join("model-00001-of-00002.safetensors"),
            SafetensorsBytes({{"first.a", F32Tensor({2}, {1.0f, 2.0f})},
                              {"first.b", F32Tensor({1}, {3.0f})}}));
  WriteFile(dir.Join("model-00002-of-00002.safetensors"),
            SafetensorsBytes({{"second.c", F32Tensor({3}, {4.0f, 5.0f, 6.0f})}}));
  WriteFile(dir.Join("model.safetensors.index.json"), R"({
    "metadata": {"total_size": 24},
    "weight_map": {"first.a": "model-00001-of-00002.safetensors",
                   "first.b": "model-00001-of-00002.safetensors",
                   "second.c": "model-00002-of-00002.safetensors"}})");
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(dir.path()));
  EXPECT_TRUE(ckpt->Contains("first.a"));
  EXPECT_TRUE(ckpt->Contains("first.b"));
  EXPECT_TRUE(ckpt->Contains("second.c"));
  EXPECT_FALSE(ckpt->Contains("third.d"));
  ASSERT_OK_AND_ASSIGN(const TensorEntry* a, ckpt->Find("first.a"));
  ASSERT_OK_AND_ASSIGN(const TensorEntry* b, ckpt->Find("first.b"));
  ASSERT_OK_AND_ASSIGN(const TensorEntry* c, ckpt->Find("second.c"));
  EXPECT_EQ(a->view().as<float>()[1], 2.0f);
  EXPECT_EQ(b->view().as<float>()[0], 3.0f);
  EXPECT_EQ(c->view().as<float>()[2], 6.0f);
  EXPECT_THAT(a->file, HasSubstr("model-00001-of-00002.safetensors"));
  EXPECT_THAT(c->file, HasSubstr("model-00002-of-00002.safetensors"));
}

TEST(CheckpointTest, ShardedFixture) {
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open("tests/fixtures/models/llama2_mha"));
  // lm_head.weight lives in the second shard, the embeddings in the first.
  ASSERT_OK_AND_ASSIGN(const TensorEntry* head, ckpt->Find("lm_head.weight"));
  ASSERT_OK_AND_ASSIGN(const TensorEntry* embed, ckpt->Find("model.embed_tokens.weight"));
  EXPECT_EQ(head->shape, (std::vector<int64_t>{32000, 32}));
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{32000, 32}));
  EXPECT_THAT(head->file, HasSubstr("model-00002-of-00002"));
  EXPECT_THAT(embed->file, HasSubstr("model-00001-of-00002"));
}

TEST(CheckpointTest, EmptyDirectoryIsNotFoundNamingTheDir) {
  ScopedTempDir dir;
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(ckpt.status()), AllOf(HasSubstr(dir.path()), HasSubstr("model.safetensors")));
}

TEST(CheckpointTest, PytorchBinOnlySaysToConvert) {
  ScopedTempDir dir;
  WriteFile(dir.Join("pytorch_model.bin"), "PK\x03\x04 not really a zip");
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(ckpt.status()),
              AllOf(HasSubstr(dir.path()), HasSubstr("convert"), HasSubstr("safetensors")));
}

// Shard b holds "dup" although the index assigns "dup" to shard a: the checkpoint is ambiguous
// and must be refused (when opened, or at the latest when both shards have been read).
TEST(CheckpointTest, SameTensorInTwoShards) {
  ScopedTempDir dir;
  WriteFile(dir.Join("a.safetensors"), SafetensorsBytes({{"dup", F32Tensor({1}, {1.0f})}}));
  WriteFile(dir.Join("b.safetensors"), SafetensorsBytes({{"dup", F32Tensor({1}, {2.0f})},
                                                         {"other", F32Tensor({1}, {3.0f})}}));
  WriteFile(dir.Join("model.safetensors.index.json"),
            R"({"weight_map": {"dup": "a.safetensors", "other": "b.safetensors"}})");
  const absl::Status s = OpenAndFind(dir.path(), {"dup", "other"});
  ASSERT_FALSE(s.ok()) << "a tensor stored in two shards was accepted";
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(Message(s), AllOf(HasSubstr("\"dup\""), HasSubstr(dir.path())));
}

TEST(CheckpointTest, IndexWithoutWeightMap) {
  ScopedTempDir dir;
  WriteFile(dir.Join("model.safetensors.index.json"), R"({"metadata": {}})");
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(ckpt.status()),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("weight_map")));
}

TEST(CheckpointTest, IndexNamesMissingShard) {
  ScopedTempDir dir;
  WriteFile(dir.Join("model.safetensors.index.json"),
            R"({"weight_map": {"w": "model-00001-of-00002.safetensors"}})");
  const absl::Status s = OpenAndFind(dir.path(), {"w"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(s), HasSubstr(dir.Join("model-00001-of-00002.safetensors")));
}

// A shard missing from the directory is refused when the checkpoint is opened, even if no
// tensor of it is ever looked up (a pipeline stage may never touch it).
TEST(CheckpointTest, IndexNamingAMissingShardIsRefusedAtOpen) {
  ScopedTempDir dir;
  WriteFile(dir.Join("a.safetensors"), SafetensorsBytes({{"a", F32Tensor({1}, {1.0f})}}));
  WriteFile(dir.Join("model.safetensors.index.json"),
            R"({"weight_map": {"a": "a.safetensors", "b": "b.safetensors"}})");
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok()) << "an index naming a missing shard was accepted";
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(ckpt.status()),
              AllOf(HasSubstr(dir.Join("b.safetensors")),
                    HasSubstr("model.safetensors.index.json")));
}

TEST(CheckpointTest, IndexWithNonStringOrEmptyWeightMap) {
  for (const char* index : {R"({"weight_map": {"a": 3}})", R"({"weight_map": {"a": ["x"]}})",
                            R"({"weight_map": {"a": ""}})", R"({"weight_map": {}})",
                            R"(["weight_map"])"}) {
    SCOPED_TRACE(index);
    ScopedTempDir dir;
    WriteFile(dir.Join("model.safetensors.index.json"), index);
    auto ckpt = Checkpoint::Open(dir.path());
    ASSERT_FALSE(ckpt.ok());
    EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(ckpt.status()),
                AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("weight_map")));
  }
}

TEST(CheckpointTest, DirectoriesWhereFilesBelong) {
  {
    ScopedTempDir dir;
    std::filesystem::create_directories(dir.Join("model.safetensors"));
    auto ckpt = Checkpoint::Open(dir.path());
    ASSERT_FALSE(ckpt.ok());
    EXPECT_THAT(Message(ckpt.status()),
                AllOf(HasSubstr(dir.Join("model.safetensors")), HasSubstr("is a directory")));
  }
  {
    ScopedTempDir dir;
    std::filesystem::create_directories(dir.Join("model.safetensors.index.json"));
    auto ckpt = Checkpoint::Open(dir.path());
    ASSERT_FALSE(ckpt.ok());
    EXPECT_THAT(Message(ckpt.status()), AllOf(HasSubstr(dir.Join("model.safetensors.index.json")),
                                              HasSubstr("is a directory")));
  }
  {
    ScopedTempDir dir;
    std::filesystem::create_directories(dir.Join("a.safetensors"));
    WriteFile(dir.Join("model.safetensors.index.json"),
              R"({"weight_map": {"a": "a.safetensors"}})");
    const absl::Status s = OpenAndFind(dir.path(), {"a"});
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(Message(s),
                AllOf(HasSubstr(dir.Join("a.safetensors")), HasSubstr("is a directory")));
  }
}

TEST(CheckpointTest, TruncatedShardIsReportedWithItsPath) {
  ScopedTempDir dir;
  const std::string shard = dir.Join("model-00001-of-00001.safetensors");
  WriteFile(shard, SafetensorsBytes({{"w", F32Tensor({64}, std::vector<float>(64, 1.0f))}}));
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) / 2);
  WriteFile(dir.Join("model.safetensors.index.json"),
            R"({"weight_map": {"w": "model-00001-of-00001.safetensors"}})");
  const absl::Status s = OpenAndFind(dir.path(), {"w"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(s), AllOf(HasSubstr(shard), HasSubstr("\"w\""), HasSubstr("truncated")));
}

TEST(CheckpointTest, CorruptSingleFileIsReportedWithItsPath) {
  ScopedTempDir dir;
  WriteFile(dir.Join("model.safetensors"), "garbage!");
  const absl::Status s = OpenAndFind(dir.path(), {});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(s), HasSubstr(dir.Join("model.safetensors")));
}

// ---- LoadLlamaWeights ----

constexpr char kGqaFixture[] = "tests/fixtures/models/llama70b_gqa";

absl::StatusOr<LlamaWeights> LoadWeights(const std::string& dir,
                                         std::unique_ptr<Checkpoint>* keep) {
  auto config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();
  *keep = std::move(*ckpt);
  auto plan = MakeShardPlan(*config, WorldLayout{});  // a single rank holds everything
  if (!plan.ok()) return plan.status();
  return LoadLlamaWeights(**keep, *config, *plan);
}

TEST(LlamaWeightsTest, FixtureLoads) {
  std::unique_ptr<Checkpoint> ckpt;
  ASSERT_OK_AND_ASSIGN(LlamaWeights w, LoadWeights(kGqaFixture, &ckpt));
  // hidden 128, 16 heads x head_dim 8, 2 kv heads, intermediate 256, vocab 512, 4 layers.
  ASSERT_EQ(w.layers.size(), 4u);
  EXPECT_EQ(w.embed.dim(0), 512);
  EXPECT_EQ(w.layers[0].wq.dim(0), 128);
  EXPECT_EQ(w.layers[0].wk.dim(0), 16);
  EXPECT_EQ(w.layers[0].w_down.dim(1), 256);
  EXPECT_NE(w.lm_head.data, w.embed.data);  // untied
  const size_t per_layer = 4 * (128 + 128 * 128 + 2 * 16 * 128 + 128 * 128 + 128 + 3 * 256 * 128);
  EXPECT_EQ(w.bytes, 4 * (2 * 512 * 128 + 128) + 4 * per_layer);
}

TEST(LlamaWeightsTest, ConfigWithFewerLayersThanWeights) {
  ScopedTempDir dir;
  testing::CopyDir(kGqaFixture, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["num_hidden_layers"] = 3; });
  std::unique_ptr<Checkpoint> ckpt;
  auto w = LoadWeights(dir.path(), &ckpt);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(w.status()),
              AllOf(HasSubstr("model.layers.3."), HasSubstr("layer 3"),
                    HasSubstr("num_hidden_layers=3"), HasSubstr("disagree")));
}

TEST(LlamaWeightsTest, ConfigWithMoreLayersThanWeights) {
  ScopedTempDir dir;
  testing::CopyDir(kGqaFixture, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["num_hidden_layers"] = 5; });
  std::unique_ptr<Checkpoint> ckpt;
  auto w = LoadWeights(dir.path(), &ckpt);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(w.status()), AllOf(HasSubstr("\"model.layers.4."), HasSubstr("missing"),
                                         HasSubstr(dir.path())));
}

TEST(LlamaWeightsTest, WrongIntermediateSize) {
  ScopedTempDir dir;
  testing::CopyDir(kGqaFixture, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["intermediate_size"] = 200; });
  std::unique_ptr<Checkpoint> ckpt;
  auto w = LoadWeights(dir.path(), &ckpt);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(w.status()),
              AllOf(HasSubstr("\"model.layers.0.mlp.gate_proj.weight\""), HasSubstr("[256, 128]"),
                    HasSubstr("[200, 128]"), HasSubstr("intermediate_size"),
                    HasSubstr("model.safetensors")));
}

TEST(LlamaWeightsTest, WrongKeyValueHeads) {
  ScopedTempDir dir;
  testing::CopyDir(kGqaFixture, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["num_key_value_heads"] = 4; });
  std::unique_ptr<Checkpoint> ckpt;
  auto w = LoadWeights(dir.path(), &ckpt);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(w.status()),
              AllOf(HasSubstr("\"model.layers.0.self_attn.k_proj.weight\""), HasSubstr("[16, 128]"),
                    HasSubstr("[32, 128]"), HasSubstr("num_key_value_heads")));
}

TEST(LlamaWeightsTest, UntiedWithoutLmHead) {
  ScopedTempDir dir;
  testing::TinyLlamaDims d;
  json config = testing::TinyLlamaConfig(d);
  config["tie_word_embeddings"] = false;
  testing::WriteTinyLlama(dir.path(), config,
                          testing::TinyLlamaTensors(d, 1, 0.5f, /*with_lm_head=*/false));
  std::unique_ptr<Checkpoint> ckpt;
  auto w = LoadWeights(dir.path(), &ckpt);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(w.status()), AllOf(HasSubstr("\"lm_head.weight\""), HasSubstr(dir.path()),
                                         HasSubstr("tie_word_embeddings=false")));
}

TEST(LlamaWeightsTest, TiedWithoutLmHeadSharesTheEmbedding) {
  ScopedTempDir dir;
  testing::TinyLlamaDims d;
  json config = testing::TinyLlamaConfig(d);
  config["tie_word_embeddings"] = true;
  testing::WriteTinyLlama(dir.path(), config,
                          testing::TinyLlamaTensors(d, 1, 0.5f, /*with_lm_head=*/false));
  std::unique_ptr<Checkpoint> ckpt;
  ASSERT_OK_AND_ASSIGN(LlamaWeights w, LoadWeights(dir.path(), &ckpt));
  EXPECT_EQ(w.lm_head.data, w.embed.data);
  // The shared table is counted once: 2 layers + embed + final norm.
  const size_t q = 16, kv = 8;
  const size_t per_layer = 4 * (2 * 16 + q * 16 + 2 * kv * 16 + 16 * q + 3 * 32 * 16);
  EXPECT_EQ(w.bytes, 4 * (64 * 16 + 16) + 2 * per_layer);
}

TEST(LlamaWeightsTest, I32WeightIsRefused) {
  ScopedTempDir dir;
  testing::TinyLlamaDims d;
  auto tensors = testing::TinyLlamaTensors(d, 1);
  tensors["model.norm.weight"] = {"I32", {16}, std::string(64, '\0')};
  testing::WriteTinyLlama(dir.path(), testing::TinyLlamaConfig(d), tensors);
  std::unique_ptr<Checkpoint> ckpt;
  auto w = LoadWeights(dir.path(), &ckpt);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(w.status()),
              AllOf(HasSubstr("\"model.norm.weight\""), HasSubstr("I32"), HasSubstr("F32, F16 or BF16")));
}

}  // namespace
}  // namespace tessera
