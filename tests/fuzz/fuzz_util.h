// Helpers shared by the libFuzzer targets: a private scratch directory per process, writing the
// fuzzer's bytes to files there (the parsers under test read files), and splitting one input into
// several parts at NUL bytes (text inputs rarely contain NUL, so it is a free separator).
#ifndef TESSERA_TESTS_FUZZ_FUZZ_UTIL_H_
#define TESSERA_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace tessera::fuzz {

// A directory made once per process under $TMPDIR (or /tmp), removed at normal exit.
const std::string& ScratchDir();

// Writes `data` to ScratchDir()/`name` (replacing it) and returns the path; aborts on failure,
// which is a broken machine, not a finding.
std::string WriteScratchFile(const std::string& name, absl::string_view data);

// `data` as text.
inline absl::string_view AsText(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

// `text` split at NUL bytes into at most `max_parts` parts (the last keeps any further NULs).
std::vector<std::string> SplitAtNul(absl::string_view text, size_t max_parts);

}  // namespace tessera::fuzz

#endif  // TESSERA_TESTS_FUZZ_FUZZ_UTIL_H_
