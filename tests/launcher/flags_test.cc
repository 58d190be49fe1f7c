// NormalizeFlagNames: dashes in flag names become underscores (absl's spelling); values, whether
// after '=' or in the next argument, are never touched (launcher/flags.h).
#include <string>
#include <vector>

#include "absl/flags/reflection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/command_help.h"
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

// Every flag a command's help lists is a defined flag (else its entry would say "not defined").
TEST(CommandHelpTest, EveryListedFlagIsDefined) {
  EXPECT_EQ(CommandNames(), (Args{"generate", "eval", "serve", "bench", "calibrate", "plan"}));
  for (const std::string& command : CommandNames()) {
    const Args flags = CommandFlags(command);
    EXPECT_FALSE(flags.empty()) << command;
    for (const std::string& flag : flags) {
      if (flag == "set") continue;  // parsed by the launcher, not absl
      EXPECT_NE(absl::FindCommandLineFlag(flag), nullptr) << command << " --" << flag;
    }
    EXPECT_THAT(CommandHelp(command), ::testing::Not(::testing::HasSubstr("not defined")));
  }
  EXPECT_TRUE(CommandFlags("frobnicate").empty());
  EXPECT_EQ(CommandHelp("frobnicate"), "");
}

// A flag that the command does not read is refused (it would have no effect), naming it with
// dashes; every listed flag, a negated boolean and --help pass.
TEST(CommandHelpTest, FlagsACommandDoesNotReadAreRefused) {
  for (const std::string& command : CommandNames()) {
    EXPECT_TRUE(CheckCommandFlags(command, CommandFlags(command)).ok()) << command;
  }
  EXPECT_TRUE(CheckCommandFlags("generate", {"max_new_tokens", "noignore_eos", "help"}).ok());
  const absl::Status port = CheckCommandFlags("generate", {"model", "port"});
  EXPECT_EQ(port.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(port.message()),
              ::testing::HasSubstr("--port is not a flag of `tessera generate`"));
  EXPECT_THAT(std::string(CheckCommandFlags("eval", {"calib_tac"}).message()),
              ::testing::HasSubstr("--calib-tac is not a flag of `tessera eval`"));
  EXPECT_FALSE(CheckCommandFlags("plan", {"method"}).ok());
}

TEST(CommandHelpTest, EntryGivesNameTypeDefaultAndHelp) {
  const std::string help = CommandHelp("generate");
  EXPECT_THAT(help, ::testing::StartsWith("usage: tessera generate "));
  EXPECT_THAT(help, ::testing::HasSubstr("  --max-new-tokens=<int32>  (default: 64)\n"
                                         "      Tokens to generate at most per prompt\n"));
  EXPECT_THAT(help, ::testing::HasSubstr("  --ignore-eos[=<bool>]  (default: false)\n"));
  EXPECT_THAT(help, ::testing::HasSubstr("  --backend=<string>  (default: \"cpu\")\n"));
  EXPECT_THAT(help, ::testing::HasSubstr("  --set=<path=value>  (repeatable; default: none)\n"));
}

TEST(WantsHelpTest, HelpWhereAFlagMayStand) {
  EXPECT_TRUE(WantsHelp({"--help"}));
  EXPECT_TRUE(WantsHelp({"-h"}));
  EXPECT_TRUE(WantsHelp({"--model", "m", "--ignore-eos", "--help"}));
  EXPECT_TRUE(WantsHelp({"--max-new-tokens=4", "--help"}));
  EXPECT_FALSE(WantsHelp({}));
  EXPECT_FALSE(WantsHelp({"--model", "m"}));
  // The value of the flag before it: a prompt, a --set assignment.
  EXPECT_FALSE(WantsHelp({"--prompt", "--help"}));
  EXPECT_FALSE(WantsHelp({"--max-new-tokens", "-h"}));
  EXPECT_FALSE(WantsHelp({"--set", "--help"}));
  EXPECT_FALSE(WantsHelp({"--", "--help"}));
}

}  // namespace
}  // namespace tessera
