// The subcommands of `tessera` and their flags, for `tessera <command> --help`: a usage line,
// what the command does, and for each flag its name (as typed, with dashes), value type,
// default and one-line help, read from the flag definitions (launcher/flags.cc).
#ifndef TESSERA_LAUNCHER_COMMAND_HELP_H_
#define TESSERA_LAUNCHER_COMMAND_HELP_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tessera {

// The subcommands, in the order the general usage lists them: generate, eval, bench, plan.
std::vector<std::string> CommandNames();

// Whether `command` is one of CommandNames().
bool IsCommand(const std::string& command);

// The flags `command` reads, with absl's underscore spelling ("max_new_tokens"), including "set"
// (--set, repeatable, parsed by the launcher, not absl); empty for an unknown command.
std::vector<std::string> CommandFlags(const std::string& command);

// OK when every flag in `given` (underscore spelling; "noNAME" for a negated boolean) is one
// `command` reads; else InvalidArgument naming the first that is not (it would have no effect)
// and the command's --help.
absl::Status CheckCommandFlags(const std::string& command, const std::vector<std::string>& given);

// The help text of `command` (ends with a newline); empty for an unknown command.
std::string CommandHelp(const std::string& command);

// Whether `args` (the arguments after the command) ask for help: "--help" or "-h" where a flag
// may stand, not as the value of the flag before it (--prompt --help generates from "--help").
bool WantsHelp(const std::vector<std::string>& args);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_COMMAND_HELP_H_
