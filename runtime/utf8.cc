#include "runtime/utf8.h"

#include <cstdint>

namespace tessera {
namespace {

// Expected sequence length from a lead byte, or 0 if it cannot start a sequence.
int SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

}  // namespace

// Reference: RFC 3629 section 4 (UTF8-octets grammar).
size_t FindInvalidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const int len = SequenceLength(s[i]);
    if (len == 0 || i + len > n) return i;
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
    }
    if (len == 3) {
      if (s[i] == 0xe0 && s[i + 1] < 0xa0) return i;   // overlong
      if (s[i] == 0xed && s[i + 1] > 0x9f) return i;   // surrogate
    } else if (len == 4) {
      if (s[i] == 0xf0 && s[i + 1] < 0x90) return i;   // overlong
      if (s[i] == 0xf4 && s[i + 1] > 0x8f) return i;   // above U+10FFFF
    }
    i += len;
  }
  return n;
}

size_t CompleteUtf8Prefix(absl::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  size_t n = text.size();
  // Walk back over at most 3 continuation bytes to the last lead byte.
  size_t i = n;
  int back = 0;
  while (i > 0 && back < 4 && (s[i - 1] & 0xc0) == 0x80) {
    --i;
    ++back;
  }
  if (i == 0) return back == 0 ? 0 : n;
  const int len = SequenceLength(s[i - 1]);
  if (len > 1 && back + 1 < len) return i - 1;  // the last sequence is incomplete
  return n;
}

}  // namespace tessera
