// PythonRstripLength, PythonLength and PythonSplitWordCount against CPython 3.11: each row's
// expected values are len(s.rstrip().encode()), len(s) and len(re.split(r"\s+", s)) as printed
// by the interpreter for the same string.
#include "launcher/eval/python_text.h"

#include <string>

#include "gtest/gtest.h"

namespace tessera {
namespace {

struct Row {
  std::string text;
  size_t rstrip_bytes;
  int64_t length, words;
};

TEST(PythonText, MatchesCPython) {
  const Row rows[] = {
      {"def f(x):  \n", 9, 12, 3},
      {"a\u00a0b\u3000", 4, 4, 3},
      {"  lead and trail \t", 16, 18, 5},
      {"", 0, 0, 1},
      {"x", 1, 1, 1},
      {"\u2028\u2029y\u0085", 7, 4, 3},
      {"caf\u00e9 \u4e16\u754c  \u00a0\n", 12, 11, 3},
      {"\x1c\x1fz\x1e", 3, 4, 3},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(PythonRstripLength(r.text), r.rstrip_bytes) << r.text;
    EXPECT_EQ(PythonLength(r.text), r.length) << r.text;
    EXPECT_EQ(PythonSplitWordCount(r.text), r.words) << r.text;
  }
}

TEST(PythonText, SpaceSetIsPythons) {
  int count = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) count += IsPythonSpace(cp);
  EXPECT_EQ(count, 29);  // sum(chr(c).isspace() for c in range(0x110000))
  EXPECT_FALSE(IsPythonSpace(0x200b));  // zero-width space is not whitespace in Python
  EXPECT_TRUE(IsPythonSpace(0x3000));
}

TEST(PythonText, InvalidUtf8IsNotSpace) {
  const std::string bad = "ab\xc2";  // a truncated 2-byte sequence
  EXPECT_EQ(PythonRstripLength(bad), 3u);
  EXPECT_EQ(PythonLength(bad), 3);
}

}  // namespace
}  // namespace tessera
