// HOMER against the Python reference on transformers (tools/reference/homer.py, fixtures in
// tests/fixtures/homer): on the embedded model (GQA 8:2, 8 layers) and on the 70B-shaped GQA
// fixture (16:2, 4 layers), prompts of 2048 and 4096 tokens (8 and 16 chunks):
// - `tessera calibrate`'s procedure (CalibrateBias) on the reference's windows gives its table
//   (max |difference| <= 1e-4 relative to the table's scale);
// - with that table, HOMER keeps the same prompt tokens (Jaccard >= 0.99; the test prints it),
//   at the same positions, with the same next position, and the last token's logits are within
//   2e-3 of the reference's.
#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/homer/bias_calibration.h"
#include "methods/homer/homer_prefill.h"
#include "nlohmann/json.hpp"
#include "runtime/file_io.h"
#include "runtime/safetensors.h"
#include "tests/methods/homer/homer_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr char kDir[] = "tests/fixtures/homer";

template <typename T>
std::vector<T> Values(const SafetensorsFile& file, const std::string& name) {
  const TensorEntry& e = file.tensors().at(name);
  std::vector<T> out(e.bytes / sizeof(T));
  std::memcpy(out.data(), e.data, e.bytes);
  return out;
}

struct Case {
  const char* name;
  const char* model;
};

class HomerReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(HomerReferenceTest, CalibrationKeepSetsAndLogitsMatchTheReference) {
  const Case& c = GetParam();
  ASSERT_OK_AND_ASSIGN(const std::string manifest,
                       ReadWholeFile(absl::StrCat(kDir, "/MANIFEST.json")));
  const nlohmann::json report = nlohmann::json::parse(manifest)[c.name];
  const int64_t C = report["C"], T = report["T"], W = report["W"], P = report["P"],
                S = report["S"];
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(absl::StrCat(kDir, "/", c.name,
                                                                     ".safetensors")));
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(auto model, LlamaModel::Load(c.model, backend.get()));
  const int64_t layers = model->config().num_hidden_layers;

  homer::BiasTable reference;
  reference.layers = layers;
  reference.distances = C;
  reference.values = Values<float>(*file, "bias");
  const std::vector<int32_t> windows = Values<int32_t>(*file, "calibration_windows");
  homer::BiasCalibration run;
  for (size_t i = 0; i < windows.size(); i += C) {
    run.sequences.emplace_back(windows.begin() + i, windows.begin() + i + C);
  }
  run.total = static_cast<int64_t>(run.sequences.size());
  ASSERT_OK_AND_ASSIGN(const homer::BiasTable mine, homer::CalibrateBias(*model, run));
  float scale = 0, worst = 0;
  for (size_t i = 0; i < mine.values.size(); ++i) {
    scale = std::max(scale, std::abs(reference.values[i]));
    worst = std::max(worst, std::abs(mine.values[i] - reference.values[i]));
  }
  std::printf("%s calibration: max |diff| %.3g (table scale %.3g)\n", c.name, worst, scale);
  EXPECT_LE(worst, 1e-4 * std::max(1.0f, scale));

  homer::PrefillOptions options;
  options.schedule = {C, T, W, layers};
  options.bias = &reference;
  homer::HomerPrefill prefill(model.get(), options);
  for (int64_t length : report["lengths"].get<std::vector<int64_t>>()) {
    SCOPED_TRACE(::testing::Message() << c.name << " length " << length);
    const std::vector<int32_t> prompt = Values<int32_t>(*file, absl::StrCat("prompt_", length));
    ASSERT_OK_AND_ASSIGN(const homer::PrefillResult r, prefill.Run(prompt, P, S));
    const std::vector<int32_t> source = Values<int32_t>(*file, absl::StrCat("source_", length));
    std::set<int32_t> a(r.source.begin(), r.source.end()), b(source.begin(), source.end()), both;
    std::set_intersection(a.begin(), a.end(), b.begin(), b.end(),
                          std::inserter(both, both.begin()));
    const double jaccard = static_cast<double>(both.size()) / (a.size() + b.size() - both.size());
    EXPECT_GE(jaccard, 0.99);
    EXPECT_EQ(r.next_position, Values<int32_t>(*file, absl::StrCat("next_position_", length))[0]);
    if (r.source == source) {
      EXPECT_EQ(r.positions, Values<int32_t>(*file, absl::StrCat("positions_", length)));
    }
    ASSERT_OK_AND_ASSIGN(const std::vector<float> logits, testing::ToHost(*backend, r.logits));
    const std::vector<float> want = Values<float>(*file, absl::StrCat("logits_", length));
    ASSERT_EQ(logits.size(), want.size());
    float diff = 0;
    for (size_t v = 0; v < want.size(); ++v) diff = std::max(diff, std::abs(logits[v] - want[v]));
    std::printf("%s %lld tokens: %lld chunks, keep-set Jaccard %.4f (%zu kept), logits max "
                "|diff| %.3g\n",
                c.name, static_cast<long long>(length), static_cast<long long>(r.schedule.chunks),
                jaccard, r.source.size(), diff);
    EXPECT_LE(diff, 2e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, HomerReferenceTest,
                         ::testing::Values(Case{"tiny", testing::kHomerModel},
                                           Case{"gqa", "tests/fixtures/models/llama70b_gqa"}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tessera
