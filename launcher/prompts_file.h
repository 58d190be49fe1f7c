// Reading a JSONL prompts file for `tessera generate --prompts FILE`.
//
// Each non-empty line is a JSON object: {"prompt": "...", "id": any (optional, echoed back),
// "max_new_tokens": int, "temperature": number, "top_k": int, "top_p": number, "seed": int,
// "stop": [string, ...]} where every field but "prompt" is optional (null: absent) and defaults
// to the flags. Every field is type-checked and integers range-checked (max_new_tokens >= 1 and
// top_k >= 0, both int32); errors name the file, the line and the field.
#ifndef TESSERA_LAUNCHER_PROMPTS_FILE_H_
#define TESSERA_LAUNCHER_PROMPTS_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/generator.h"

namespace tessera {

struct PromptSpec {
  std::string text;
  nlohmann::json id;           // null when absent
  GenerationRequest request;   // prompt_ids left empty; the caller tokenizes `text`
  int line = 0;                // 1-based line in the file
};

// `defaults` supplies the fields a line leaves out.
absl::StatusOr<std::vector<PromptSpec>> ReadPromptsFile(const std::string& path,
                                                        const GenerationRequest& defaults);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_PROMPTS_FILE_H_
