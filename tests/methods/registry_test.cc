// MethodRegistry: a method set in the settings but not registered is refused (Unimplemented,
// naming the field), a registered one is created from its settings, its requirements reach the
// model load, and its hooks drive the forward pass of the loaded model.
#include "methods/registry.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/golden/golden_fixture.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

// A method of the test's own: exits after the layer its settings name (early_exit.exit_layer).
class ExitAtLayer : public Method, public LayerHook {
 public:
  explicit ExitAtLayer(int64_t layer) : layer_(layer) {}
  absl::string_view field() const override { return "early_exit"; }
  ModelOptions Requirements() const override { return {{layer_}}; }
  absl::Status Attach(LlamaModel& model) override {
    if (layer_ >= model.config().num_hidden_layers) {
      return absl::InvalidArgumentError("method.early_exit.exit_layer: beyond the model");
    }
    return absl::OkStatus();
  }
  ForwardHooks Hooks() override {
    ForwardHooks hooks;
    hooks.layer = this;
    return hooks;
  }
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    return ctx.layer == layer_ ? LayerAction::Exit() : LayerAction::Continue();
  }

 private:
  int64_t layer_;
};

config::MethodSettings EarlyExitAndBeacon() {
  config::MethodSettings s;
  s.mutable_early_exit()->set_exit_layer(1);
  s.mutable_beacon();
  return s;
}

TEST(MethodRegistryTest, BuiltInMethodsAcceptEveryMethod) {
  config::MethodSettings all = EarlyExitAndBeacon();
  all.mutable_homer();
  all.mutable_harp();
  all.mutable_sparse_attention();
  EXPECT_OK(BuiltInMethods().CheckAvailable(all));
  // Every early-exit policy is built.
  for (auto policy : {config::EarlyExitSettings::FREE, config::EarlyExitSettings::CALM,
                      config::EarlyExitSettings::STATIC}) {
    config::MethodSettings early_exit;
    early_exit.mutable_early_exit()->set_policy(policy);
    EXPECT_OK(BuiltInMethods().Create(early_exit).status());
  }
  EXPECT_OK(BuiltInMethods().CheckAvailable(config::MethodSettings()));
}

TEST(MethodRegistryTest, CreatesRegisteredMethodsAndRefusesTheRest) {
  MethodRegistry registry;
  ASSERT_OK(registry.Register("early_exit", "Early exit", [](const config::MethodSettings& s) {
    return absl::StatusOr<std::unique_ptr<Method>>(
        std::make_unique<ExitAtLayer>(s.early_exit().exit_layer()));
  }));
  EXPECT_EQ(registry.Register("early_exit", "again", nullptr).code(),
            absl::StatusCode::kAlreadyExists);
  // A method this registry lacks is refused by name, the registered one is not named.
  const auto both = registry.Create(EarlyExitAndBeacon());
  EXPECT_EQ(both.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(absl::StrContains(both.status().message(), "early_exit")) << both.status();
  EXPECT_EQ(std::string(both.status().message()),
            "method.beacon: Activation Beacon is not built in this version of Tessera "
            "(Unimplemented); remove it from the run config (the method section of --config, the "
            "--method file, or --set method.beacon.*)");

  config::MethodSettings settings;
  settings.mutable_early_exit()->set_exit_layer(1);
  ASSERT_OK_AND_ASSIGN(auto methods, registry.Create(settings));
  ASSERT_EQ(methods.size(), 1u);
  EXPECT_EQ(MergedModelOptions(methods).head_after_layers, std::vector<int64_t>{1});

  // The method's requirements and hooks on a real model: the pass stops after layer 1.
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(auto model,
                       LlamaModel::Load("tests/fixtures/models/llama2_mha", backend.get(), {},
                                        MergedModelOptions(methods)));
  ASSERT_OK(methods[0]->Attach(*model));
  ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(1, 4));
  ASSERT_OK_AND_ASSIGN(const ForwardOutput out,
                       model->Forward(testing::AllPositions({1, 5, 9, 2}), *cache,
                                      methods[0]->Hooks()));
  EXPECT_EQ(out.exit_layer, 1);
  EXPECT_EQ(out.logits.dim(0), 4);
  EXPECT_EQ(cache->length(2, 0), 0);  // layers after the exit wrote nothing
}

}  // namespace
}  // namespace tessera
