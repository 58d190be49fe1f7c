// The request side of `tessera serve` without a server: the Llama-2 chat prompt (as the
// template in Llama-2-chat's tokenizer_config.json renders it), special-token text, and the
// parser's answers for each error class.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "launcher/serve/completion_request.h"
#include "launcher/serve/http_api.h"

namespace tessera::serve {
namespace {

using nlohmann::json;

// The template strips the whole first-turn content (system block + user text), not the user text
// alone: " Hi " keeps its leading space after the system block.
TEST(Llama2ChatPrompt, RendersSystemUserAssistantTurns) {
  const json messages = json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": " Hi "},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Add 2 and 3."}])");
  auto prompt = Llama2ChatPrompt(messages);
  ASSERT_TRUE(std::holds_alternative<std::string>(prompt));
  EXPECT_EQ(std::get<std::string>(prompt),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello. </s>"
            "<s>[INST] Add 2 and 3. [/INST]");
}

TEST(Llama2ChatPrompt, RefusesBadTurnOrder) {
  for (const char* bad : {R"([])", R"([{"role": "assistant", "content": "x"}])",
                          R"([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])",
                          R"([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])",
                          R"([{"role": "user"}])"}) {
    auto prompt = Llama2ChatPrompt(json::parse(bad));
    ASSERT_TRUE(std::holds_alternative<ApiError>(prompt)) << bad;
    EXPECT_EQ(std::get<ApiError>(prompt).http_status, 400);
  }
}

TEST(ParseJsonObject, NamesTheProblem) {
  auto bad = ParseJsonObject("{\"prompt\": \"\xff\"}");
  ASSERT_TRUE(std::holds_alternative<ApiError>(bad));
  EXPECT_THAT(std::get<ApiError>(bad).message, testing::HasSubstr("UTF-8"));
  auto list = ParseJsonObject("[1]");
  ASSERT_TRUE(std::holds_alternative<ApiError>(list));
  EXPECT_THAT(std::get<ApiError>(list).message, testing::HasSubstr("JSON object"));
  EXPECT_TRUE(std::holds_alternative<json>(ParseJsonObject("{\"a\": 1}")));
}

TEST(ApiError, StatusMapping) {
  EXPECT_EQ(FromStatus(absl::InvalidArgumentError("x")).http_status, 400);
  EXPECT_EQ(FromStatus(absl::ResourceExhaustedError("x")).http_status, 429);
  EXPECT_EQ(FromStatus(absl::UnimplementedError("x")).http_status, 501);
  EXPECT_EQ(FromStatus(absl::UnavailableError("x")).http_status, 503);
  EXPECT_EQ(FromStatus(absl::InternalError("x")).http_status, 500);
  const json body = BadRequest("max_tokens", "must be >= 0").Body();
  EXPECT_EQ(body["error"]["param"], "max_tokens");
  EXPECT_EQ(body["error"]["message"], "max_tokens: must be >= 0");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
}

}  // namespace
}  // namespace tessera::serve
