#include "launcher/eval/run_config.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/text_format.h"
#include "kernels/status_macros.h"
#include "launcher/methods/method_settings.h"
#include "launcher/text_proto.h"
#include "runtime/memory_plan.h"

namespace tessera {
namespace {

namespace pb = google::protobuf;

// The longest a generated program may run: a day.
constexpr float kMaxSandboxSeconds = 86400;

absl::Status FieldError(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// Parses one scalar `text` into field `f` of `m` (appending when repeated).
absl::Status SetScalar(pb::Message* m, const pb::FieldDescriptor* f, const std::string& text,
                       const std::string& path) {
  const pb::Reflection* r = m->GetReflection();
  const bool rep = f->is_repeated();
  auto bad = [&] { return FieldError(path, absl::StrCat("\"", text, "\" is not a valid ", f->type_name())); };
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      float v;
      if (!absl::SimpleAtof(text, &v)) return bad();
      rep ? r->AddFloat(m, f, v) : r->SetFloat(m, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if (!absl::SimpleAtod(text, &v)) return bad();
      rep ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (!absl::SimpleAtob(text, &v)) return bad();
      rep ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING:
      rep ? r->AddString(m, f, text) : r->SetString(m, f, text);
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumDescriptor* e = f->enum_type();
      const pb::EnumValueDescriptor* v = e->FindValueByName(text);
      if (v == nullptr) {
        std::vector<std::string> names;
        for (int i = 0; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
        return FieldError(path, absl::StrCat("\"", text, "\" is not one of ",
                                             absl::StrJoin(names, ", ")));
      }
      rep ? r->AddEnum(m, f, v) : r->SetEnum(m, f, v);
      break;
    }
    default:
      return FieldError(path, "is not a scalar field; set one of its fields instead");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<config::RunConfig> LoadRunConfig(const std::string& path) {
  config::RunConfig c;
  RETURN_IF_ERROR(ParseTextProtoFile(
      path, "--config",
      {{"tessera.config.RunConfig.methods",
        "methods are set in `method { ... }`, one typed section per method (early_exit, "
        "sparse_attention, homer, harp, beacon; configs/method_settings.proto), or with "
        "--method FILE; examples in configs/methods/"}},
      &c));
  return c;
}

absl::Status SetField(config::RunConfig* config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set \"", assignment, "\": expected path=value, e.g. layout.tp=2"));
  }
  const std::string path = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  std::vector<std::string> names = absl::StrSplit(path, '.');
  pb::Message* m = config;
  std::string walked;
  for (size_t i = 0; i < names.size(); ++i) {
    walked += (i ? "." : "") + names[i];
    const pb::FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(names[i]);
    if (f == nullptr) {
      return FieldError(walked, absl::StrCat("no such field in ", m->GetDescriptor()->full_name()));
    }
    if (i + 1 < names.size()) {
      if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
        return FieldError(walked, "is not a message, so it has no sub-fields");
      }
      m = m->GetReflection()->MutableMessage(m, f);
      continue;
    }
    if (f->is_map()) return FieldError(walked, "maps cannot be set with --set");
    if (f->is_repeated()) {
      m->GetReflection()->ClearField(m, f);
      for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        RETURN_IF_ERROR(SetScalar(m, f, std::string(part), walked));
      }
      return absl::OkStatus();
    }
    return SetScalar(m, f, value, walked);
  }
  return absl::OkStatus();
}

absl::StatusOr<DType> KvDTypeOf(const config::ModelSpec& model) {
  if (model.kv_dtype().empty()) return DType::kF32;
  absl::StatusOr<DType> dtype = ParseFloatDType(model.kv_dtype());
  if (!dtype.ok()) {
    return FieldError("model.kv_dtype", absl::StrCat("is \"", model.kv_dtype(),
                                                      "\"; use f32, bf16 or f16"));
  }
  return dtype;
}

absl::Status ValidateRunSettings(const config::RunConfig& c) {
  if (!c.model().backend().empty() && c.model().backend() != "cpu" && c.model().backend() != "cuda") {
    return FieldError("model.backend", absl::StrCat("is \"", c.model().backend(), "\"; use cpu or cuda"));
  }
  if (c.model().max_seq_len() < 0) return FieldError("model.max_seq_len", "must be >= 0");
  RETURN_IF_ERROR(KvDTypeOf(c.model()).status());
  for (auto [name, v] : {std::pair<const char*, int>{"layout.tp", c.layout().tp()},
                         {"layout.pp", c.layout().pp()}, {"layout.dp", c.layout().dp()},
                         {"layout.micro_batches", c.layout().micro_batches()},
                         {"layout.comm_timeout_s", c.layout().comm_timeout_s()},
                         {"max_batch", c.max_batch()}, {"task.limit", c.task().limit()},
                         {"sampling.max_new_tokens", c.sampling().max_new_tokens()},
                         {"sampling.top_k", c.sampling().top_k()}}) {
    if (v < 0) return FieldError(name, "must be >= 0 (0 takes the default)");
  }
  // Written as !(in range) so that NaN (text format and --set accept "nan") is refused too.
  const float temperature = c.sampling().temperature(), top_p = c.sampling().top_p();
  if (!(temperature >= 0) || std::isinf(temperature)) {
    return FieldError("sampling.temperature",
                      absl::StrCat("must be a finite number >= 0 (0: greedy), got ", temperature));
  }
  if (!(top_p >= 0 && top_p <= 1)) {
    return FieldError("sampling.top_p",
                      absl::StrCat("must be in [0, 1] (0 or 1: off), got ", top_p));
  }
  return absl::OkStatus();
}

absl::Status ValidateRunConfig(const config::RunConfig& c) {
  if (c.model().path().empty()) return FieldError("model.path", "is required (a model directory)");
  RETURN_IF_ERROR(ValidateRunSettings(c));
  const config::Task& t = c.task();
  if (t.bos() != config::BOS_DEFAULT && (t.kind_case() == config::Task::kPasskey ||
                                         t.kind_case() == config::Task::kCodeGeneration)) {
    return FieldError("task.bos", "is read by the multiple_choice, generation and perplexity "
                                  "tasks only (passkey and code_generation always prepend BOS); "
                                  "remove it");
  }
  switch (t.kind_case()) {
    case config::Task::KIND_NOT_SET:
      return FieldError("task", "names no task; set one of perplexity, passkey, multiple_choice, "
                                "code_generation, generation");
    case config::Task::kPerplexity: {
      const auto& p = t.perplexity();
      if (p.data().empty()) return FieldError("task.perplexity.data", "is required (a JSONL file)");
      if (p.window() < 0 || p.window() == 1) return FieldError("task.perplexity.window", "must be >= 2");
      if (p.stride() < 0) {
        return FieldError("task.perplexity.stride",
                          "must be >= 0 (0: lm-evaluation-harness's rolling windows)");
      }
      if (p.window() > 0 && p.stride() > p.window()) {
        return FieldError("task.perplexity.stride", "must not exceed task.perplexity.window");
      }
      break;
    }
    case config::Task::kPasskey: {
      const auto& p = t.passkey();
      for (int32_t len : p.context_lengths()) {
        if (len < 32) return FieldError("task.passkey.context_lengths", "every length must be >= 32 tokens");
      }
      for (float d : p.depths()) {
        if (!(d >= 0 && d <= 1)) {
          return FieldError("task.passkey.depths",
                            absl::StrCat("every depth must be in [0, 1], got ", d));
        }
      }
      if (p.samples_per_cell() < 0) return FieldError("task.passkey.samples_per_cell", "must be >= 0");
      if (p.key_digits() < 0 || p.key_digits() > 9) {
        return FieldError("task.passkey.key_digits", "must be in [1, 9] (0 takes the default)");
      }
      break;
    }
    case config::Task::kMultipleChoice:
      if (t.multiple_choice().data().empty()) {
        return FieldError("task.multiple_choice.data", "is required (a JSONL file)");
      }
      break;
    case config::Task::kCodeGeneration: {
      const auto& p = t.code_generation();
      if (p.data().empty()) return FieldError("task.code_generation.data", "is required (a JSONL file)");
      // The sandbox converts the timeout to integer seconds and microseconds.
      if (!(p.timeout_s() >= 0 && p.timeout_s() <= kMaxSandboxSeconds)) {
        return FieldError("task.code_generation.timeout_s",
                          absl::StrCat("must be in (0, ", kMaxSandboxSeconds,
                                       "] seconds (0 takes the default of 10), got ",
                                       p.timeout_s()));
      }
      if (p.memory_limit_mb() < 0) return FieldError("task.code_generation.memory_limit_mb", "must be > 0");
      break;
    }
    case config::Task::kGeneration:
      if (t.generation().data().empty()) return FieldError("task.generation.data", "is required (a JSONL file)");
      break;
  }
  if (c.has_method()) RETURN_IF_ERROR(ValidateMethodSettings(c.method()));
  return absl::OkStatus();
}

std::string RunConfigText(const config::RunConfig& c) {
  std::string text;
  pb::TextFormat::PrintToString(c, &text);
  return text;
}

}  // namespace tessera
