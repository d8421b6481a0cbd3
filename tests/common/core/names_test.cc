#include "common/core/names.h"

#include <string>

#include "common/core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace chasqui {
namespace {

using ::testing::HasSubstr;

TEST(NamesTest, AcceptsOneLowercaseSubjectToken) {
  for (const char* name : {"a", "0", "segip", "sedem-lp", "reg_civil", "a1-b_2", "9lives"}) {
    EXPECT_TRUE(IsValidName(name)) << name;
    EXPECT_TRUE(ValidateName("consumer", name).ok()) << name;
  }
}

TEST(NamesTest, LengthLimitIs63) {
  EXPECT_TRUE(IsValidName(std::string(63, 'a')));
  EXPECT_FALSE(IsValidName(std::string(64, 'a')));
  EXPECT_TRUE(IsValidName("a" + std::string(62, '-')));
}

TEST(NamesTest, RefusesWhatIsNotOneToken) {
  for (std::string name :
       {std::string(), std::string("Segip"), std::string("segiP"), std::string("seg.ip"),
        std::string("_segip"), std::string("-segip"), std::string(">"), std::string("*"),
        std::string("seg>"), std::string("seg*"), std::string("seg ip"), std::string("seg\nip"),
        std::string("ségip"), std::string("seg\0ip", 6), std::string("seg/ip")}) {
    EXPECT_FALSE(IsValidName(name)) << Printable(name);
    absl::Status s = ValidateName("provider", name);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << Printable(name);
    EXPECT_THAT(std::string(MessageOf(s)), HasSubstr("provider")) << Printable(name);
    EXPECT_THAT(std::string(MessageOf(s)), HasSubstr("[a-z0-9_-]")) << Printable(name);
  }
}

TEST(NamesTest, InvalidNameMessageIsEscapedAndBounded) {
  absl::Status s = ValidateName("service", std::string("x\n\x1b[31m") + std::string(500, 'y'));
  const std::string msg(MessageOf(s));
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_EQ(msg.find('\x1b'), std::string::npos);
  EXPECT_THAT(msg, HasSubstr("\\x0a"));
  EXPECT_LT(msg.size(), 300u);
}

TEST(NamesTest, EnvIsTestOrProd) {
  EXPECT_TRUE(IsValidEnv("test"));
  EXPECT_TRUE(IsValidEnv("prod"));
  for (const char* env : {"", "Test", "PROD", "dev", "tes", "prod ", "production"}) {
    EXPECT_FALSE(IsValidEnv(env)) << env;
    absl::Status s = ValidateEnv(env);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(MessageOf(s)), HasSubstr("test or prod"));
  }
  EXPECT_TRUE(ValidateEnv("prod").ok());
}

TEST(PrintableTest, PassesPlainTextThrough) {
  EXPECT_EQ(Printable("hello world 123"), "hello world 123");
  EXPECT_EQ(Printable(""), "");
}

TEST(PrintableTest, EscapesControlQuotesBackslashAndHighBytes) {
  EXPECT_EQ(Printable(std::string("a\nb\tc\0d", 7)), "a\\x0ab\\x09c\\x00d");
  EXPECT_EQ(Printable("\x7f"), "\\x7f");
  EXPECT_EQ(Printable("\xff\x80"), "\\xff\\x80");
  EXPECT_EQ(Printable("say \"hi\""), "say \\x22hi\\x22");
  EXPECT_EQ(Printable("a\\b"), "a\\x5cb");
}

TEST(PrintableTest, TruncatesAndMarksTheCut) {
  EXPECT_EQ(Printable(std::string(80, 'a')), std::string(80, 'a'));
  EXPECT_EQ(Printable(std::string(81, 'a')), std::string(80, 'a') + "...");
  EXPECT_EQ(Printable("abcdef", 3), "abc...");
  EXPECT_EQ(Printable("abc", 3), "abc");
  // The bound applies to the input; each escaped byte grows to 4 characters at most.
  const std::string out = Printable(std::string(1000, '\x01'), 10);
  EXPECT_EQ(out, [] {
    std::string s;
    for (int i = 0; i < 10; ++i) s += "\\x01";
    return s + "...";
  }());
}

}  // namespace
}  // namespace chasqui
