#include "tests/methods/homer/homer_harness.h"

#include <random>

#include "kernels/status_macros.h"

namespace tessera::testing {

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadHomerModel(Backend* backend,
                                                           ProcessGroups* groups) {
  ModelParallelism parallel;
  if (groups != nullptr) parallel = {groups->layout, groups->tp.get(), groups->pp.get()};
  return LlamaModel::Load(kHomerModel, backend, parallel);
}

std::vector<int32_t> RandomPrompt(int64_t length, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> id(3, 4095);
  std::vector<int32_t> tokens = {1};
  while (static_cast<int64_t>(tokens.size()) < length) tokens.push_back(id(rng));
  return tokens;
}

homer::BiasTable RampBias(int64_t layers, int64_t distances) {
  homer::BiasTable t;
  t.layers = layers;
  t.distances = distances;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t d = 0; d < distances; ++d) {
      t.values.push_back(0.5f - 0.01f * static_cast<float>(d) + 0.05f * static_cast<float>(l));
    }
  }
  return t;
}

absl::StatusOr<std::vector<float>> ToHost(Backend& backend, TensorView view) {
  RETURN_IF_ERROR(backend.Synchronize());
  std::vector<float> host(view.numel());
  RETURN_IF_ERROR(backend.CopyToHost(host.data(), view.data, view.bytes()));
  return host;
}

absl::StatusOr<std::vector<float>> CacheRows(const KvCache& cache, Backend& backend,
                                             int64_t layer, int64_t slot, bool keys) {
  if (cache.dtype() != DType::kF32) return absl::InvalidArgumentError("an F32 cache only");
  const TensorView t = keys ? cache.k(layer) : cache.v(layer);
  const int64_t width = t.dim(2) * t.dim(3);
  const int64_t length = cache.length(layer, slot);
  const TensorView rows =
      t.Rows(slot, slot + 1).Reshaped({cache.max_seq(), width}).Rows(0, length);
  return ToHost(backend, rows);
}

std::vector<float> RowRange(const std::vector<float>& rows, int64_t width, int64_t begin,
                            int64_t end) {
  return std::vector<float>(rows.begin() + begin * width, rows.begin() + end * width);
}

}  // namespace tessera::testing
