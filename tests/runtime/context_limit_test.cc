// ContextLimit: the context Tessera allows for each rope_scaling type, with and without the
// user's max_seq_len request, and the messages that say what to change.
#include "runtime/context_limit.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

ModelConfig WithScaling(RopeScaling::Type type) {
  ModelConfig c;
  c.max_position_embeddings = 16;
  c.rope_scaling.type = type;
  c.rope_scaling.factor = 2.0;
  return c;
}

constexpr RopeScaling::Type kExtending[] = {RopeScaling::Type::kDynamic, RopeScaling::Type::kLinear,
                                            RopeScaling::Type::kLlama3, RopeScaling::Type::kYarn};

TEST(ContextLimitTest, WithoutARequestTheLimitIsMaxPositionEmbeddings) {
  for (RopeScaling::Type type : {RopeScaling::Type::kNone, RopeScaling::Type::kDynamic,
                                 RopeScaling::Type::kLinear, RopeScaling::Type::kLlama3}) {
    SCOPED_TRACE(RopeScalingName(type));
    ASSERT_OK_AND_ASSIGN(int64_t limit, ContextLimit(WithScaling(type), 0));
    EXPECT_EQ(limit, 16);
  }
}

TEST(ContextLimitTest, ARequestUpToMaxPositionEmbeddingsIsTakenForEveryType) {
  for (RopeScaling::Type type : {RopeScaling::Type::kNone, RopeScaling::Type::kDynamic}) {
    ASSERT_OK_AND_ASSIGN(int64_t shorter, ContextLimit(WithScaling(type), 8));
    EXPECT_EQ(shorter, 8);
    ASSERT_OK_AND_ASSIGN(int64_t equal, ContextLimit(WithScaling(type), 16));
    EXPECT_EQ(equal, 16);
  }
}

TEST(ContextLimitTest, ScalingThatExtendsTheContextAllowsALongerRequest) {
  for (RopeScaling::Type type : kExtending) {
    SCOPED_TRACE(RopeScalingName(type));
    EXPECT_TRUE(RopeExtendsContext(WithScaling(type)));
    ASSERT_OK_AND_ASSIGN(int64_t limit, ContextLimit(WithScaling(type), 48));
    EXPECT_EQ(limit, 48);
  }
}

TEST(ContextLimitTest, PlainRopeRefusesALongerRequestNamingRopeScaling) {
  const ModelConfig plain = WithScaling(RopeScaling::Type::kNone);
  EXPECT_FALSE(RopeExtendsContext(plain));
  const absl::Status s = ContextLimit(plain, 17).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  for (const char* part :
       {"max_seq_len=17", "--max-seq-len", "max_position_embeddings=16", "config.json",
        "no rope_scaling", "not trained past 16", "\"rope_type\": \"dynamic\""}) {
    EXPECT_THAT(std::string(s.message()), HasSubstr(part));
  }
}

TEST(ContextLimitTest, NegativeRequestIsRefused) {
  const absl::Status s = ContextLimit(WithScaling(RopeScaling::Type::kDynamic), -1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(">= 0"));
}

TEST(ContextLimitTest, HintSaysWhatToChange) {
  EXPECT_THAT(
      ContextLimitHint(WithScaling(RopeScaling::Type::kDynamic), 0, 48),
      AllOf(HasSubstr("rope_scaling \"dynamic\""), HasSubstr("set --max-seq-len to at least 48")));
  EXPECT_THAT(
      ContextLimitHint(WithScaling(RopeScaling::Type::kLlama3), 32, 40),
      AllOf(HasSubstr("rope_scaling \"llama3\""), HasSubstr("raise --max-seq-len to at least 40")));
  EXPECT_THAT(ContextLimitHint(WithScaling(RopeScaling::Type::kNone), 8, 12),
              HasSubstr("up to max_position_embeddings=16"));
  EXPECT_THAT(ContextLimitHint(WithScaling(RopeScaling::Type::kNone), 0, 20),
              AllOf(HasSubstr("no rope_scaling"), HasSubstr("not trained past")));
}

}  // namespace
}  // namespace tessera
