// The `tessera` binary: `tessera <command> [--flags]`. The only place that parses flags and
// turns a Status into an exit code.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "launcher/commands.h"
#include "launcher/flags.h"

namespace {

constexpr char kUsage[] =
    "usage: tessera <command> [flags]\n"
    "commands:\n"
    "  generate  --model DIR (--prompt TEXT | --prompts FILE.jsonl) [--max-new-tokens N]\n"
    "            [--temperature T --top-k K --top-p P --seed S --stop a,b --output FILE]\n"
    "  bench     --model DIR [--prompt-tokens N --decode-tokens N --batch B]\n"
    "Run `tessera <command> --help` for every flag.";

int Fail(const std::string& message) {
  std::fprintf(stderr, "tessera: error: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "%s\n", kUsage);
    return argc < 2 ? 2 : (std::string(argv[1]) == "--help" ? 0 : 2);
  }
  const std::string command = argv[1];
  std::vector<std::string> args = {std::string(argv[0]) + " " + command};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args = tessera::NormalizeFlagNames(args);
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());
  if (rest.size() > 1) {
    return Fail(absl::StrCat("unexpected argument \"", rest[1], "\"; flags take the form --name=value"));
  }
  if (const int threads = absl::GetFlag(FLAGS_threads); threads > 0) {
    setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
  }
  absl::Status status;
  if (command == "generate") {
    status = tessera::RunGenerate();
  } else if (command == "bench") {
    status = tessera::RunBench();
  } else {
    return Fail(absl::StrCat("unknown command \"", command, "\"\n", kUsage));
  }
  if (!status.ok()) return Fail(std::string(status.message()));
  return 0;
}
