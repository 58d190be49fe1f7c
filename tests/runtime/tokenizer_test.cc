// Tokenizer against Python sentencepiece: tests/fixtures/tokenizer/encodings.json holds, for each
// text, the ids, pieces and decoded text sentencepiece produced for the fixture tokenizer.model.
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer.h"
#include "tests/runtime/test_files.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using nlohmann::json;

constexpr char kModel[] = "tests/fixtures/tokenizer/tokenizer.model";

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK_AND_ASSIGN(tok_, Tokenizer::Load(kModel)); }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(TokenizerTest, VocabSize) { EXPECT_EQ(tok_->vocab_size(), 1000); }

TEST_F(TokenizerTest, MatchesPythonSentencePiece) {
  std::ifstream in("tests/fixtures/tokenizer/encodings.json");
  ASSERT_TRUE(in);
  const json cases = json::parse(in);
  ASSERT_GE(cases.size(), 10u);
  for (const json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    SCOPED_TRACE("text: \"" + text + "\"");
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> got, tok_->Encode(text));
    EXPECT_EQ(got, ids);
    EXPECT_EQ(tok_->Decode(ids), c["decoded"].get<std::string>());
  }
}

// From the fixture: "Hello world!" is ▁ H el lo ▁w or l d ! = 839 912 336 328 331 271 848 849 921.
TEST_F(TokenizerTest, DecodeAfterKeepsTheLeadingSpace) {
  const std::vector<int32_t> context = {839, 912, 336, 328};  // "Hello"
  const std::vector<int32_t> world = {331, 271, 848, 849};    // "▁world"
  EXPECT_EQ(tok_->Decode(context), "Hello");
  EXPECT_EQ(tok_->Decode(world), "world");  // a leading ▁ is dropped at the start of a text
  EXPECT_EQ(tok_->DecodeAfter(context, world), " world");
  EXPECT_EQ(tok_->DecodeAfter(context, {921}), "!");
  EXPECT_EQ(tok_->DecodeAfter({}, world), "world");
}

// Byte-fallback pieces: "中" is <0xE4> <0xB8> <0xAD> = 231 187 176 (from the fixture).
TEST_F(TokenizerTest, DecodeAfterAcrossByteFallback) {
  const std::vector<int32_t> context = {839, 912, 336, 328};  // "Hello"
  EXPECT_EQ(tok_->DecodeAfter(context, {839, 231, 187, 176}), " \xe4\xb8\xad");
}

TEST_F(TokenizerTest, IdsBeyondThePiecesDecodeToNothing) {
  EXPECT_EQ(tok_->Decode({912, 1000, 31999, 336}), "Hel");
}

struct BadUtf8 {
  std::string text;
  size_t offset;
  std::string byte;  // as printed, e.g. "0xff"
};

TEST_F(TokenizerTest, InvalidUtf8IsRefusedNamingTheOffset) {
  const std::vector<BadUtf8> cases = {
      {"\xff", 0, "0xff"},
      {"abc\xc3", 3, "0xc3"},            // truncated two-byte sequence
      {"x\xc0\xaf", 1, "0xc0"},          // overlong '/'
      {"ok \xed\xa0\x80 no", 3, "0xed"},  // UTF-16 surrogate U+D800
      {"caf\xc3\xa9\x80", 5, "0x80"},    // stray continuation byte after a valid é
  };
  for (const BadUtf8& c : cases) {
    SCOPED_TRACE(c.byte);
    auto ids = tok_->Encode(c.text);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(ids.status().message()),
                AllOf(HasSubstr("UTF-8"), HasSubstr("offset " + std::to_string(c.offset)),
                      HasSubstr(c.byte)));
  }
}

TEST(TokenizerLoadTest, MissingFileNamesThePath) {
  testing::ScopedTempDir dir;
  const std::string path = dir.Join("tokenizer.model");
  auto tok = Tokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_TRUE(tok.status().code() == absl::StatusCode::kNotFound ||
              tok.status().code() == absl::StatusCode::kInvalidArgument)
      << tok.status();
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(path));
}

TEST(TokenizerLoadTest, GarbageFileNamesThePath) {
  testing::ScopedTempDir dir;
  const std::string path = dir.Join("tokenizer.model");
  testing::WriteFile(path, "this is not a sentencepiece model proto \x01\x02\x03");
  auto tok = Tokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()),
              AllOf(HasSubstr(path), HasSubstr("SentencePiece")));
}

// libsentencepiece reads the model through an ifstream, which throws on a directory: the
// process used to abort (SIGABRT) instead of reporting it.
TEST(TokenizerLoadTest, DirectoryNamesThePath) {
  testing::ScopedTempDir dir;
  const std::string path = dir.Join("tokenizer.model");
  std::filesystem::create_directories(path);
  auto tok = Tokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()),
              AllOf(HasSubstr(path), HasSubstr("is a directory")));
}

}  // namespace
}  // namespace tessera
