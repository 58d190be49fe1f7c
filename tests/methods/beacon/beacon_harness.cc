#include "tests/methods/beacon/beacon_harness.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/file_io.h"
#include "runtime/safetensors.h"

namespace tessera::testing {
namespace fs = std::filesystem;
using nlohmann::json;

absl::StatusOr<json> BeaconCase(const std::string& name) {
  ASSIGN_OR_RETURN(const std::string text,
                   ReadWholeFile(absl::StrCat(kBeaconFixtures, "/MANIFEST.json")));
  const json manifest = json::parse(text);
  for (const json& c : manifest["cases"]) {
    if (c["name"] == name) return c;
  }
  return absl::NotFoundError(absl::StrCat("no reference case ", name));
}

json CaseKeys(const json& c) {
  return {{"beacon_window", c["window"]},
          {"beacon_stride", json::array({c["window"]})},
          {"beacon_ratio", json::array({c["ratio"]})},
          {"beacon_ratio_mix", "step-random"},
          {"beacon_attn", c["mask"]},
          {"beacon_attend_previous", c["attend_previous"]},
          {"beacon_param", json::array({"q", "k", "v", "o"})}};
}

absl::StatusOr<std::string> MakeBeaconCheckpoint(const std::string& tag, const json& keys,
                                                 bool with_beacon_tensors,
                                                 const std::string& beacon_file) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path dir = fs::path(tmp != nullptr ? tmp : fs::temp_directory_path().string()) /
                       absl::StrCat("beacon_", tag, "_", ::getpid());
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const fs::path base = fs::absolute(kBeaconBaseModel);
  fs::create_symlink(base / "model.safetensors", dir / "base.safetensors");
  fs::copy_file(base / "generation_config.json", dir / "generation_config.json");
  json map = json::object();
  ASSIGN_OR_RETURN(auto base_file, SafetensorsFile::Open((base / "model.safetensors").string()));
  for (const auto& [name, entry] : base_file->tensors()) map[name] = "base.safetensors";
  if (with_beacon_tensors) {
    const fs::path beacon = beacon_file.empty()
                                ? fs::absolute(kBeaconFixtures) / "beacon.safetensors"
                                : fs::absolute(beacon_file);
    fs::create_symlink(beacon, dir / "beacon.safetensors");
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(beacon.string()));
    for (const auto& [name, entry] : file->tensors()) map[name] = "beacon.safetensors";
  }
  std::ofstream(dir / "model.safetensors.index.json") << json{{"weight_map", map}}.dump(1);
  ASSIGN_OR_RETURN(const std::string text, ReadWholeFile((base / "config.json").string()));
  json config = json::parse(text);
  for (const auto& [k, v] : keys.items()) config[k] = v;
  std::ofstream(dir / "config.json") << config.dump(1);
  return dir.string();
}

absl::Status WriteZeroTensors(const std::string& path,
                              const std::map<std::string, std::vector<int64_t>>& shapes) {
  json header = json::object();
  size_t offset = 0;
  for (const auto& [name, shape] : shapes) {
    size_t bytes = sizeof(float);
    for (int64_t d : shape) bytes *= static_cast<size_t>(d);
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = text.size();
  f.write(reinterpret_cast<const char*>(&n), sizeof(n));
  f << text << std::string(offset, '\0');
  return f.good() ? absl::OkStatus() : absl::InternalError("cannot write " + path);
}

absl::StatusOr<BeaconModel> LoadBeaconModel(Backend* backend, const std::string& dir,
                                            const config::BeaconSettings& settings,
                                            ProcessGroups* groups) {
  BeaconModel m;
  config::MethodSettings all;
  *all.mutable_beacon() = settings;
  ASSIGN_OR_RETURN(m.method, BeaconMethod::Create(all));
  ASSIGN_OR_RETURN(const ModelConfig config, LoadModelConfig(dir));
  RETURN_IF_ERROR(m.method->Configure(config));
  ModelParallelism parallel;
  if (groups != nullptr) parallel = {groups->layout, groups->tp.get(), groups->pp.get()};
  ASSIGN_OR_RETURN(m.model, LlamaModel::Load(dir, backend, parallel, m.method->Requirements()));
  RETURN_IF_ERROR(m.method->Attach(*m.model));
  m.runner = static_cast<beacon::BeaconRunner*>(m.method->Runner());
  return m;
}

absl::StatusOr<RowScores> ScoreRows(BeaconModel& m, KvCache& cache, int32_t slot,
                                    const std::vector<int32_t>& tokens, int32_t next) {
  ForwardBatch batch;
  batch.tokens = tokens;
  for (size_t i = 0; i < tokens.size(); ++i) {
    batch.positions.push_back(static_cast<int32_t>(i));
    batch.slots.push_back(slot);
    batch.logit_rows.push_back(static_cast<int32_t>(i));
  }
  StepReduction reduction;
  reduction.words_per_row = 2;
  reduction.reduce = [&](size_t, const ForwardBatch& b,
                         const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
    std::vector<int32_t> targets;
    for (int32_t r : out.logit_rows) {
      const size_t row = b.logit_rows[r];
      targets.push_back(row + 1 < b.tokens.size() ? b.tokens[row + 1] : std::max(next, 0));
    }
    ASSIGN_OR_RETURN(const auto logprobs, m.model->vocab().LogProbs(out.logits, targets));
    ASSIGN_OR_RETURN(const auto argmax, m.model->vocab().ArgMax(out.logits));
    std::vector<float> words;
    for (size_t i = 0; i < targets.size(); ++i) {
      words.push_back(static_cast<float>(logprobs[i].logprob));
      words.push_back(static_cast<float>(argmax[i]));
    }
    return words;
  };
  ASSIGN_OR_RETURN(const std::vector<float> words, m.runner->Run({batch}, cache, reduction));
  RowScores s;
  for (size_t i = 0; i < tokens.size(); ++i) {
    s.logprob.push_back(words[2 * i]);
    s.argmax.push_back(static_cast<int32_t>(words[2 * i + 1]));
  }
  return s;
}

absl::StatusOr<std::vector<int32_t>> Greedy(BeaconModel& m, KvCache& cache, int32_t slot,
                                            const std::vector<int32_t>& prompt, int new_tokens) {
  ASSIGN_OR_RETURN(RowScores s, ScoreRows(m, cache, slot, prompt));
  std::vector<int32_t> out = {s.argmax.back()};
  while (static_cast<int>(out.size()) < new_tokens) {
    ASSIGN_OR_RETURN(s, ScoreRows(m, cache, slot, {out.back()}));
    out.push_back(s.argmax.back());
  }
  return out;
}

template <typename T>
absl::StatusOr<std::vector<T>> FixtureValues(const std::string& file, const std::string& name) {
  ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(file));
  auto it = f->tensors().find(name);
  if (it == f->tensors().end()) return absl::NotFoundError(absl::StrCat(file, " has no ", name));
  std::vector<T> out(it->second.bytes / sizeof(T));
  std::memcpy(out.data(), it->second.data, it->second.bytes);
  return out;
}
template absl::StatusOr<std::vector<float>> FixtureValues(const std::string&, const std::string&);
template absl::StatusOr<std::vector<int32_t>> FixtureValues(const std::string&,
                                                            const std::string&);

}  // namespace tessera::testing
