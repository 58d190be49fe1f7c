// NormalizeFlagNames: dashes in flag names become underscores (absl's spelling); values, whether
// after '=' or in the next argument, are never touched (launcher/flags.h).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launcher/flags.h"

namespace tessera {
namespace {

using Args = std::vector<std::string>;

TEST(NormalizeFlagNamesTest, RewritesNamesOnly) {
  EXPECT_EQ(NormalizeFlagNames({"tessera generate", "--max-new-tokens=4", "--top-p", "0.9",
                                "--stop=a-b,--c-d", "--prompt=--x-y", "--ignore-eos"}),
            (Args{"tessera generate", "--max_new_tokens=4", "--top_p", "0.9", "--stop=a-b,--c-d",
                  "--prompt=--x-y", "--ignore_eos"}));
  EXPECT_TRUE(FlagWasGiven("max_new_tokens"));
  EXPECT_TRUE(FlagWasGiven("top_p"));
  EXPECT_TRUE(FlagWasGiven("ignore_eos"));
  EXPECT_FALSE(FlagWasGiven("seed"));
}

TEST(NormalizeFlagNamesTest, LeavesPlainArgumentsAlone) {
  EXPECT_EQ(NormalizeFlagNames({"tessera generate", "-", "--", "my-file", "-x-y"}),
            (Args{"tessera generate", "-", "--", "my-file", "-x-y"}));
}

// A value given as the next argument may itself start with "--" (a prompt such as
// "-- SQL-style comment", a stop string "--end-of-text"): absl takes it as the value of the
// string flag before it, so it must reach the flag unchanged.
TEST(NormalizeFlagNamesTest, ValueInTheNextArgumentIsNotRewritten) {
  EXPECT_EQ(NormalizeFlagNames({"tessera generate", "--prompt", "-- SQL-style comment",
                                "--stop", "--end-of-text"}),
            (Args{"tessera generate", "--prompt", "-- SQL-style comment", "--stop",
                  "--end-of-text"}));
}

}  // namespace
}  // namespace tessera
