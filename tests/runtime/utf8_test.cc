// FindInvalidUtf8 / CompleteUtf8Prefix against the UTF-8 definition of RFC 3629 (section 4):
// boundary code points of every sequence length are valid; overlong forms, surrogates, code
// points above U+10FFFF, stray continuation bytes and truncated sequences are not.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/utf8.h"

namespace tessera {
namespace {

TEST(FindInvalidUtf8Test, ValidText) {
  const std::vector<std::string> valid = {
      "",
      "plain ascii \t\n",
      std::string("nul\0inside", 10),
      "caf\xc3\xa9",                       // é U+00E9
      "\xe2\x82\xac",                      // € U+20AC
      "\xf0\x9f\x99\x82",                  // 🙂 U+1F642
      "\xc2\x80",                          // U+0080, smallest two-byte
      "\xdf\xbf",                          // U+07FF, largest two-byte
      "\xe0\xa0\x80",                      // U+0800, smallest three-byte
      "\xed\x9f\xbf",                      // U+D7FF, just below the surrogates
      "\xee\x80\x80",                      // U+E000, just above the surrogates
      "\xef\xbf\xbf",                      // U+FFFF
      "\xf0\x90\x80\x80",                  // U+10000, smallest four-byte
      "\xf4\x8f\xbf\xbf",                  // U+10FFFF, the largest code point
      "\xce\x95\xce\xbb \xe4\xb8\xad \xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb",
  };
  for (const std::string& s : valid) {
    EXPECT_EQ(FindInvalidUtf8(s), s.size()) << "\"" << s << "\"";
  }
}

struct Invalid {
  const char* what;
  std::string text;
  size_t offset;
};

TEST(FindInvalidUtf8Test, InvalidClasses) {
  const std::vector<Invalid> cases = {
      {"lone continuation", "ab\x80", 2},
      {"continuation after a complete char", "\xc3\xa9\xa9", 2},
      {"0xff", "x\xff", 1},
      {"0xfe", "\xfe", 0},
      {"lead 0xf5 (beyond U+10FFFF)", "\xf5\x80\x80\x80", 0},
      {"overlong 2-byte 0xc0", "a\xc0\xaf", 1},
      {"overlong 2-byte 0xc1", "\xc1\xbf", 0},
      {"overlong 3-byte", "ab\xe0\x80\xaf", 2},
      {"overlong 3-byte U+07FF", "\xe0\x9f\xbf", 0},
      {"overlong 4-byte", "\xf0\x80\x80\xaf", 0},
      {"overlong 4-byte U+FFFF", "\xf0\x8f\xbf\xbf", 0},
      {"surrogate U+D800", "ok\xed\xa0\x80", 2},
      {"surrogate U+DFFF", "\xed\xbf\xbf", 0},
      {"above U+10FFFF", "\xf4\x90\x80\x80", 0},
      {"missing continuation", "\xe2\x28\xa1", 0},
      {"ASCII inside a 4-byte sequence", "\xf0\x9f\x41\x82", 0},
      {"valid prefix then invalid", "caf\xc3\xa9 \xff", 6},
  };
  for (const Invalid& c : cases) {
    EXPECT_EQ(FindInvalidUtf8(c.text), c.offset) << c.what;
  }
}

TEST(FindInvalidUtf8Test, TruncatedAtTheEnd) {
  EXPECT_EQ(FindInvalidUtf8("abc\xc3"), 3u);
  EXPECT_EQ(FindInvalidUtf8("abc\xe2\x82"), 3u);
  EXPECT_EQ(FindInvalidUtf8("abc\xe2"), 3u);
  EXPECT_EQ(FindInvalidUtf8("\xf0\x9f\x99"), 0u);
  EXPECT_EQ(FindInvalidUtf8("\xf0"), 0u);
}

TEST(CompleteUtf8PrefixTest, CompleteTextIsKept) {
  for (const std::string s : {"", "abc", "caf\xc3\xa9", "\xe2\x82\xac", "x\xf0\x9f\x99\x82"}) {
    EXPECT_EQ(CompleteUtf8Prefix(s), s.size()) << "\"" << s << "\"";
  }
}

TEST(CompleteUtf8PrefixTest, IncompleteLastSequenceIsCut) {
  EXPECT_EQ(CompleteUtf8Prefix("a\xc3"), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("a\xe2"), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("a\xe2\x82"), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("ab\xf0"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("ab\xf0\x9f"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("ab\xf0\x9f\x99"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("\xf0\x9f\x99"), 0u);
  EXPECT_EQ(CompleteUtf8Prefix("\xc3\xa9\xe2\x82"), 2u);  // é complete, € not
}

// Every prefix of a mixed text: the result is the largest character boundary <= the length.
TEST(CompleteUtf8PrefixTest, EveryPrefixOfMixedText) {
  const std::string text = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82z";  // a é € 🙂 z
  const std::vector<size_t> boundaries = {0, 1, 3, 6, 10, 11};
  for (size_t n = 0; n <= text.size(); ++n) {
    size_t expected = 0;
    for (size_t b : boundaries) {
      if (b <= n) expected = b;
    }
    EXPECT_EQ(CompleteUtf8Prefix(text.substr(0, n)), expected) << "prefix of " << n << " bytes";
  }
}

}  // namespace
}  // namespace tessera
