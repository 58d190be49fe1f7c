// Reading whole input files (config.json, JSONL prompts and datasets, run configs, the
// safetensors index) without exceptions: every failure is a Status naming the path and saying
// what is wrong with it ("... is a directory; expected a file").
#ifndef TESSERA_RUNTIME_FILE_IO_H_
#define TESSERA_RUNTIME_FILE_IO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera {

// OK when `path` names something that can be read as a file: NotFound when it does not exist,
// InvalidArgument when it is a directory. `what` prefixes messages ("--prompts", "tokenizer").
absl::Status CheckIsFile(const std::string& path, absl::string_view what = "");

// The contents of the file at `path` (a regular file or a pipe), read with POSIX calls.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what = "");

// `text` split at '\n' (a final line without '\n' included), for JSONL; line i is line i + 1
// of the file.
std::vector<std::string> SplitLines(const std::string& text);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_FILE_IO_H_
