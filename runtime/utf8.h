// UTF-8 validation for user text (prompts, stop strings).
#ifndef TESSERA_RUNTIME_UTF8_H_
#define TESSERA_RUNTIME_UTF8_H_

#include <cstddef>
#include "absl/strings/string_view.h"

namespace tessera {

// Returns the byte offset of the first invalid UTF-8 sequence in `text` (overlong forms,
// surrogates and code points above U+10FFFF are invalid), or text.size() when all is valid.
size_t FindInvalidUtf8(absl::string_view text);

// Length of the longest prefix of `text` that does not end inside a multi-byte sequence.
size_t CompleteUtf8Prefix(absl::string_view text);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_UTF8_H_
