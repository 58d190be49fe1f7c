#include "launcher/eval/python_text.h"

namespace tessera {
namespace {

// Decodes the code point that starts at text[i]; sets *len to its byte length (1 for a byte that
// does not start a valid sequence, which then decodes to U+FFFD and is never whitespace).
uint32_t DecodeAt(std::string_view text, size_t i, size_t* len) {
  const unsigned char c = static_cast<unsigned char>(text[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > text.size()) {
    *len = 1;
    return 0xfffd;
  }
  uint32_t cp = n == 1 ? c : c & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    const unsigned char cc = static_cast<unsigned char>(text[i + k]);
    if ((cc & 0xc0) != 0x80) {
      *len = 1;
      return 0xfffd;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  *len = n;
  return cp;
}

}  // namespace

bool IsPythonSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

size_t PythonRstripLength(std::string_view text) {
  size_t keep = 0;
  for (size_t i = 0, len = 0; i < text.size(); i += len) {
    if (!IsPythonSpace(DecodeAt(text, i, &len))) keep = i + len;
  }
  return keep;
}

int64_t PythonLength(std::string_view text) {
  int64_t n = 0;
  for (size_t i = 0, len = 0; i < text.size(); i += len, ++n) DecodeAt(text, i, &len);
  return n;
}

int64_t PythonSplitWordCount(std::string_view text) {
  int64_t pieces = 1;
  bool in_space = false;
  for (size_t i = 0, len = 0; i < text.size(); i += len) {
    const bool space = IsPythonSpace(DecodeAt(text, i, &len));
    if (space && !in_space) ++pieces;
    in_space = space;
  }
  return pieces;
}

}  // namespace tessera
