// Python's str semantics that lm-evaluation-harness's scoring depends on, on UTF-8 text:
// str.isspace / re's \s (the same 29 code points), str.rstrip(), len(str) in code points and
// len(re.split(r"\s+", text)), its word count for perplexity per word.
#ifndef TESSERA_LAUNCHER_EVAL_PYTHON_TEXT_H_
#define TESSERA_LAUNCHER_EVAL_PYTHON_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tessera {

// True for the code points Python's str.isspace() accepts (ASCII whitespace, U+001C..U+001F,
// U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
bool IsPythonSpace(uint32_t code_point);

// Byte length of `text` without its trailing whitespace as str.rstrip() removes it. Text that is
// not valid UTF-8 is cut after its last byte that does not end a whitespace code point.
size_t PythonRstripLength(std::string_view text);

// len(text) for the str that `text` decodes to (continuation bytes are not counted).
int64_t PythonLength(std::string_view text);

// len(re.split(r"\s+", text)): one more than the number of maximal whitespace runs (a leading or
// trailing run still counts, as the empty pieces it leaves do).
int64_t PythonSplitWordCount(std::string_view text);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_PYTHON_TEXT_H_
