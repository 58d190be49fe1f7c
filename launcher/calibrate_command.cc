// `tessera calibrate`: Top-theta thresholds, or with method.homer the HOMER bias table, from the
// command line (launcher/commands.h).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/commands.h"
#include "launcher/eval/progress.h"
#include "launcher/flags.h"
#include "launcher/model_bundle.h"
#include "launcher/model_from_flags.h"
#include "methods/homer/bias_calibration.h"
#include "methods/homer/bias_table.h"
#include "methods/top_theta/calibration_run.h"
#include "methods/top_theta/threshold_safetensors.h"
#include "methods/top_theta/top_theta_method.h"
#include "nlohmann/json.hpp"
#include "runtime/context_limit.h"
#include "runtime/file_io.h"

namespace tessera {
namespace {

using config::SparseAttentionSettings;
using nlohmann::json;

// The texts of --data: each line's "text", "prompt" or "context" string.
absl::StatusOr<std::vector<std::string>> ReadTexts(const std::string& path, int32_t limit) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "calibrate needs --data FILE.jsonl: calibration texts, one JSON object per line with a "
        "\"text\", \"prompt\" or \"context\" string");
  }
  ASSIGN_OR_RETURN(const std::string contents, ReadWholeFile(path, "--data"));
  std::vector<std::string> texts;
  const std::vector<std::string> lines = SplitLines(contents);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    const json j = json::parse(lines[i], nullptr, false);
    const std::string where = absl::StrCat(path, ":", i + 1);
    if (!j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
    }
    bool found = false;
    for (const char* field : {"text", "prompt", "context"}) {
      auto it = j.find(field);
      if (it != j.end() && it->is_string()) {
        texts.push_back(it->get<std::string>());
        found = true;
        break;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": has no \"text\", \"prompt\" or \"context\" string"));
    }
    if (limit > 0 && static_cast<int32_t>(texts.size()) == limit) break;
  }
  if (texts.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": holds no sample"));
  return texts;
}

absl::Status CheckSettings(const config::MethodSettings& methods) {
  if (!methods.has_sparse_attention()) {
    return absl::InvalidArgumentError(
        "calibrate needs method.sparse_attention settings (kind, k, layer_k, placement): "
        "--method configs/methods/sparse_attention.textproto, or --set "
        "method.sparse_attention.kind=TOP_THETA ...");
  }
  const SparseAttentionSettings& s = methods.sparse_attention();
  const bool theta = s.kind() == SparseAttentionSettings::TOP_THETA;
  const bool offline = s.sdc() == SparseAttentionSettings::SDC_OFFLINE_CALIBRATED;
  if (theta && offline) {
    return absl::UnimplementedError(
        "method.sparse_attention: calibrating Top-theta thresholds together with "
        "SDC_OFFLINE_CALIBRATED (whose terms depend on the running thresholds) is not built in "
        "this version; calibrate the thresholds with another sdc");
  }
  if (!theta && !offline) {
    return absl::InvalidArgumentError(
        "method.sparse_attention: kind TOP_K needs no calibration unless sdc is "
        "SDC_OFFLINE_CALIBRATED; nothing to calibrate");
  }
  if (absl::GetFlag(FLAGS_calib_tac) && !theta) {
    return absl::InvalidArgumentError("--calib-tac applies to kind TOP_THETA only; remove it");
  }
  if (absl::GetFlag(FLAGS_calib_add_sigma) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--calib-add-sigma ", absl::GetFlag(FLAGS_calib_add_sigma), " is negative; use c >= 0"));
  }
  const double f = absl::GetFlag(FLAGS_calib_sample_frac);
  if (!(f > 0 && f <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--calib-sample-frac ", f, " is outside (0, 1]; 1 records every row"));
  }
  return absl::OkStatus();
}

json Metadata(const SparseAttentionSettings& s, const top_theta::CalibrationRun& run,
              const ModelConfig& config, size_t samples, int64_t rows) {
  return {{"format", "tessera.top_theta.calibration"},
          {"version", 1},
          {"model", absl::GetFlag(FLAGS_model)},
          {"num_hidden_layers", config.num_hidden_layers},
          {"num_attention_heads", config.num_attention_heads},
          {"kind", SparseAttentionSettings::Kind_Name(s.kind())},
          {"placement", SparseAttentionSettings::Placement_Name(s.placement())},
          {"layer_k", run.options.layer_k},
          {"calib_add_sigma", run.options.add_sigma},
          {"calib_tac", run.options.tac},
          {"calib_sample_frac", run.sample_fraction},
          {"seed", run.seed},
          {"data", absl::GetFlag(FLAGS_data)},
          {"samples", samples},
          {"recorded_rows", rows}};
}

// The HOMER bias table (shared/specs/homer.md §3) of the plain model over windows of
// max_chunk_len tokens cut from --data, written to method.homer.bias_path.
absl::Status RunHomerCalibrate(Job& job, const config::HomerSettings& s) {
  const int64_t length = s.has_max_chunk_len() ? s.max_chunk_len() : 2048;
  const std::string path = s.bias_path();
  if (path.empty()) {
    return CheckPhase(job, absl::InvalidArgumentError(
                               "method.homer.bias_path: names the bias table calibrate writes"));
  }
  absl::StatusOr<std::vector<std::string>> texts = ReadTexts(absl::GetFlag(FLAGS_data), 0);
  RETURN_IF_ERROR(CheckPhase(job, texts.status()));
  ASSIGN_OR_RETURN(ModelBundle bundle,
                   LoadModelFromFlags(job, config::MethodSettings(), /*require_tokenizer=*/true));
  LlamaModel& model = *bundle.model;
  const ModelConfig& config = model.config();
  if (length > config.max_position_embeddings) {
    return CheckPhase(job, absl::InvalidArgumentError(absl::StrCat(
                               "method.homer.max_chunk_len ", length, " is past the model's ",
                               config.max_position_embeddings,
                               "-token window; calibrate (and run HOMER) with a chunk inside it")));
  }
  std::vector<std::vector<int32_t>> encoded;
  for (const std::string& text : *texts) {
    absl::StatusOr<std::vector<int32_t>> ids = bundle.tokenizer->Encode(text);
    RETURN_IF_ERROR(CheckPhase(job, ids.status()));
    encoded.push_back(*std::move(ids));
  }
  const std::vector<std::vector<int32_t>> windows = homer::CalibrationWindows(
      encoded, static_cast<int32_t>(config.bos_token_id), length, absl::GetFlag(FLAGS_limit));
  if (windows.empty()) {
    return CheckPhase(job, absl::InvalidArgumentError(absl::StrCat(
                               absl::GetFlag(FLAGS_data), ": the texts hold fewer than ",
                               length, " tokens, not one window of max_chunk_len")));
  }
  const WorldLayout& layout = job.layout();
  homer::BiasCalibration run;
  for (size_t i = layout.dp_rank(); i < windows.size(); i += layout.dp) {
    run.sequences.push_back(windows[i]);
  }
  run.total = static_cast<int64_t>(windows.size());
  run.world = job.groups.world.get();
  Progress progress("calibrate", run.total, layout.dp, job.is_root());
  run.progress = [&progress](int64_t n) { progress.Advance(n); };
  absl::StatusOr<homer::BiasTable> table = homer::CalibrateBias(model, run);
  RETURN_IF_ERROR(CheckPhase(job, table.status()));
  progress.Finish();
  absl::Status written = absl::OkStatus();
  if (job.is_root()) {
    table->provenance["model"] = absl::GetFlag(FLAGS_model);
    table->provenance["data"] = absl::GetFlag(FLAGS_data);
    table->provenance["rope_scaling"] = RopeScalingName(config.rope_scaling.type);
    table->provenance["rope_theta"] = absl::StrCat(config.rope_theta);
    written = homer::WriteBiasTable(path, *table);
    if (written.ok()) {
      std::fprintf(stderr, "[calibrate] HOMER bias [%lld layers, %lld distances] from %lld "
                   "windows: %s\n", static_cast<long long>(table->layers),
                   static_cast<long long>(table->distances), static_cast<long long>(run.total),
                   path.c_str());
    }
  }
  return CheckPhase(job, written);
}

}  // namespace

absl::Status RunCalibrate(Job& job, const config::MethodSettings& methods) {
  if (methods.has_homer() && methods.has_sparse_attention()) {
    return CheckPhase(job, absl::InvalidArgumentError(
                               "calibrate makes one artifact per run: set method.homer or "
                               "method.sparse_attention, not both"));
  }
  if (methods.has_homer()) return RunHomerCalibrate(job, methods.homer());
  RETURN_IF_ERROR(CheckPhase(job, CheckSettings(methods)));
  const SparseAttentionSettings& s = methods.sparse_attention();
  absl::StatusOr<std::vector<std::string>> texts =
      ReadTexts(absl::GetFlag(FLAGS_data), absl::GetFlag(FLAGS_limit));
  RETURN_IF_ERROR(CheckPhase(job, texts.status()));
  // The plain model: the thresholds do not exist yet.
  ASSIGN_OR_RETURN(ModelBundle bundle,
                   LoadModelFromFlags(job, config::MethodSettings(), /*require_tokenizer=*/true));
  LlamaModel& model = *bundle.model;
  const ModelConfig& config = model.config();
  int64_t limit = config.max_position_embeddings;
  if (absl::GetFlag(FLAGS_max_seq_len) > 0) {
    limit = std::min<int64_t>(limit, absl::GetFlag(FLAGS_max_seq_len));
  }
  std::vector<std::vector<int32_t>> requests;
  absl::Status encoded = absl::OkStatus();
  for (const std::string& text : *texts) {
    absl::StatusOr<std::vector<int32_t>> ids = bundle.tokenizer->Encode(text);
    if (!ids.ok()) {
      encoded = ids.status();
      break;
    }
    std::vector<int32_t> r = {static_cast<int32_t>(config.bos_token_id)};
    r.insert(r.end(), ids->begin(), ids->begin() + std::min<int64_t>(ids->size(), limit - 1));
    requests.push_back(std::move(r));
  }
  RETURN_IF_ERROR(CheckPhase(job, encoded));

  top_theta::CalibrationRun run;
  absl::StatusOr<std::vector<int32_t>> layer_k = top_theta::LayerKs(s, config.num_hidden_layers);
  RETURN_IF_ERROR(CheckPhase(job, layer_k.status()));
  run.options.layer_k = *layer_k;
  run.options.placement = top_theta::BaseVariant(s).placement;
  run.options.add_sigma = absl::GetFlag(FLAGS_calib_add_sigma);
  run.options.tac = absl::GetFlag(FLAGS_calib_tac);
  run.options.missing_mass = s.sdc() == SparseAttentionSettings::SDC_OFFLINE_CALIBRATED;
  run.sample_fraction = absl::GetFlag(FLAGS_calib_sample_frac);
  run.seed = FlagWasGiven("seed") ? absl::GetFlag(FLAGS_seed) : 42;
  const WorldLayout& layout = job.layout();
  run.replica = layout.dp_rank();
  run.replicas = layout.dp;
  run.world = job.groups.world.get();
  run.max_batch = absl::GetFlag(FLAGS_max_batch);
  Progress progress("calibrate", static_cast<int64_t>(requests.size()), layout.dp, job.is_root());
  run.progress = [&progress](int64_t n) { progress.Advance(n); };
  absl::StatusOr<top_theta::CalibrationOutcome> outcome =
      top_theta::RunCalibration(model, requests, run);
  RETURN_IF_ERROR(CheckPhase(job, outcome.status()));
  progress.Finish();

  absl::Status written = absl::OkStatus();
  const std::string dir =
      FlagWasGiven("output_dir") ? absl::GetFlag(FLAGS_output_dir) : s.calibration_dir();
  if (job.is_root()) {
    written = [&]() -> absl::Status {
      std::error_code error;
      std::filesystem::create_directories(dir, error);
      if (error) {
        return absl::PermissionDeniedError(
            absl::StrCat("cannot create the calibration directory ", dir, ": ", error.message()));
      }
      const bool theta = s.kind() == SparseAttentionSettings::TOP_THETA;
      if (theta) {
        RETURN_IF_ERROR(top_theta::WriteBins(dir + "/th.txt", outcome->result.thresholds,
                                             top_theta::BinFile::kThresholds));
      }
      if (run.options.missing_mass) {
        RETURN_IF_ERROR(top_theta::WriteBins(dir + "/sdc.txt", outcome->result.missing_mass,
                                             top_theta::BinFile::kMissingMass));
      }
      top_theta::ThresholdArchive archive;
      archive.layers = config.num_hidden_layers;
      archive.heads = config.num_attention_heads;
      archive.placement = SparseAttentionSettings::Placement_Name(s.placement());
      archive.layer_k = run.options.layer_k;
      if (theta) archive.thresholds = outcome->result.thresholds;
      if (run.options.missing_mass) archive.missing_mass = outcome->result.missing_mass;
      RETURN_IF_ERROR(top_theta::WriteThresholdSafetensors(dir + "/thresholds.safetensors", archive));
      std::ofstream meta(dir + "/calibration.json");
      meta << Metadata(s, run, config, requests.size(), outcome->recorded_rows).dump(2) << "\n";
      if (!meta)
        return absl::PermissionDeniedError(absl::StrCat("cannot write ", dir, "/calibration.json"));
      std::fprintf(stderr, "[calibrate] %zu bins from %lld recorded rows of %zu samples: %s/%s\n",
                   outcome->result.thresholds.size(),
                   static_cast<long long>(outcome->recorded_rows), requests.size(), dir.c_str(),
                   theta ? "th.txt" : "sdc.txt");
      return absl::OkStatus();
    }();
  }
  return CheckPhase(job, written);
}

}  // namespace tessera
