// JsonFields: every typed read refuses a value of the wrong JSON type or outside its range
// (before narrowing, so nothing wraps), and every message names the file, the line and the field.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/json_fields.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using nlohmann::json;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

const json kLine = json::parse(R"({
  "small": 7, "negative": -3, "big": 4294967297, "huge": 18446744073709551615,
  "float": 2.5, "text": "5", "flag": true, "none": null, "ids": [1, 2, 4294967298],
  "names": ["a", 3], "eps": 1e-5
})");

TEST(JsonFieldsTest, IntegersInRange) {
  const JsonFields f(kLine, "p.jsonl", 4);
  ASSERT_OK_AND_ASSIGN(int32_t small, f.Int32("small", 0, 10));
  EXPECT_EQ(small, 7);
  ASSERT_OK_AND_ASSIGN(int64_t negative, f.Int("negative", -5, 5));
  EXPECT_EQ(negative, -3);
  ASSERT_OK_AND_ASSIGN(int64_t big, f.Int("big", 0, int64_t{1} << 40));
  EXPECT_EQ(big, 4294967297);
}

TEST(JsonFieldsTest, IntegerBeyondInt32IsRefusedNotWrapped) {
  const JsonFields f(kLine, "p.jsonl", 4);
  const absl::Status s = f.Int32("big", 0, JsonFields::kInt32Max).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("p.jsonl:4: field \"big\""), HasSubstr("4294967297"),
                                HasSubstr("[0, 2147483647]")));
  EXPECT_THAT(Message(f.Int("huge", 0, INT64_MAX).status()),
              AllOf(HasSubstr("\"huge\""), HasSubstr("18446744073709551615")));
  EXPECT_THAT(Message(f.Int32("negative", 0, 10).status()), HasSubstr("got -3"));
}

TEST(JsonFieldsTest, WrongTypesAreRefused) {
  const JsonFields f(kLine, "config.json");
  EXPECT_THAT(Message(f.Int32("float", 0, 10).status()),
              AllOf(HasSubstr("config.json: field \"float\""), HasSubstr("integer"),
                    HasSubstr("2.5")));
  EXPECT_THAT(Message(f.Int32("text", 0, 10).status()), HasSubstr("\"5\""));
  EXPECT_THAT(Message(f.Double("text").status()),
              AllOf(HasSubstr("\"text\""), HasSubstr("number")));
  EXPECT_THAT(Message(f.String("small").status()),
              AllOf(HasSubstr("\"small\""), HasSubstr("string")));
  EXPECT_THAT(Message(f.Bool("small", false).status()), HasSubstr("true or false"));
  EXPECT_THAT(Message(f.StringList("names").status()), HasSubstr("field \"names[1]\""));
}

TEST(JsonFieldsTest, AbsentAndNullFieldsTakeTheFallbackOrAreMissing) {
  const JsonFields f(kLine, "config.json");
  EXPECT_FALSE(f.Has("none"));
  EXPECT_FALSE(f.Has("absent"));
  ASSERT_OK_AND_ASSIGN(int32_t v, f.Int32("none", 0, 10, 3));
  EXPECT_EQ(v, 3);
  ASSERT_OK_AND_ASSIGN(double eps, f.Double("eps", 1.0));
  EXPECT_DOUBLE_EQ(eps, 1e-5);
  EXPECT_THAT(Message(f.Int("absent", 0, 10).status()),
              HasSubstr("config.json: field \"absent\" is missing"));
}

TEST(JsonFieldsTest, IdListsNameTheBadEntry) {
  const JsonFields f(kLine, "generation_config.json");
  EXPECT_THAT(Message(f.Int32OrList("ids", 0, JsonFields::kInt32Max).status()),
              AllOf(HasSubstr("field \"ids[2]\""), HasSubstr("4294967298")));
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> one, f.Int32OrList("small", 0, 10));
  EXPECT_EQ(one, std::vector<int32_t>({7}));
}

}  // namespace
}  // namespace tessera
