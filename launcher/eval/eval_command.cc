#include "launcher/eval/eval_command.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/eval/eval_task.h"
#include "launcher/eval/progress.h"
#include "launcher/eval/results.h"
#include "launcher/eval/run_config.h"
#include "launcher/flags.h"
#include "launcher/methods/method_settings.h"
#include "launcher/methods/run_methods.h"
#include "launcher/model_bundle.h"

namespace tessera {
namespace {

using nlohmann::json;

constexpr int kRecordsTag = 11;

// Rank 0 receives every other replica's records (from its leader) and returns all records in
// input order with the job's processed-token count; other ranks return nothing.
absl::Status GatherRecords(Job& job, std::vector<json> mine, int64_t my_tokens, size_t total,
                           std::vector<json>* all, int64_t* tokens) {
  const WorldLayout& l = job.layout();
  Communicator& world = *job.groups.world;
  if (job.is_root()) {
    all->assign(total, json());
    *tokens = my_tokens;
    auto place = [&](const std::vector<json>& part) {
      for (const json& r : part) (*all)[r["index"].get<size_t>()] = r;
    };
    place(mine);
    for (int d = 1; d < l.dp; ++d) {
      ASSIGN_OR_RETURN(std::string payload, RecvString(world, d * l.tp * l.pp, kRecordsTag));
      json part = json::parse(payload, nullptr, false);
      if (part.is_discarded()) return absl::InternalError("malformed records from a replica");
      place(part["records"].get<std::vector<json>>());
      *tokens += part["tokens"].get<int64_t>();
    }
    return absl::OkStatus();
  }
  if (l.tp_rank() == 0 && l.pp_rank() == 0) {
    const json part = {{"records", mine}, {"tokens", my_tokens}};
    return SendString(world, part.dump(-1, ' ', false, json::error_handler_t::replace), 0,
                      kRecordsTag);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> PeakRssPerRank(Job& job) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  int32_t mine = static_cast<int32_t>(usage.ru_maxrss / 1024);  // MiB
  Communicator& world = *job.groups.world;
  std::vector<int32_t> all(world.size());
  RETURN_IF_ERROR(world.AllGather(TensorView::Of(&mine, DType::kI32, {1}),
                                  TensorView::Of(all.data(), DType::kI32, {world.size()})));
  std::vector<int64_t> bytes;
  for (int32_t mib : all) bytes.push_back(int64_t{mib} << 20);
  return bytes;
}

std::string TaskName(const config::RunConfig& c, const EvalTask& task) {
  return c.task().name().empty() ? task.kind() : c.task().name();
}

}  // namespace

WorldLayout LayoutOf(const config::RunConfig& c) {
  return WorldLayout{std::max(1, c.layout().tp()), std::max(1, c.layout().pp()),
                     std::max(1, c.layout().dp()), 0};
}

absl::StatusOr<config::RunConfig> EvalConfigFromFlags(const std::vector<std::string>& sets) {
  config::RunConfig c;
  if (FlagWasGiven("config")) {
    ASSIGN_OR_RETURN(c, LoadRunConfig(absl::GetFlag(FLAGS_config)));
  }
  RETURN_IF_ERROR(ApplyMethodFlag(&c));
  if (FlagWasGiven("model")) c.mutable_model()->set_path(absl::GetFlag(FLAGS_model));
  if (FlagWasGiven("backend")) c.mutable_model()->set_backend(absl::GetFlag(FLAGS_backend));
  if (FlagWasGiven("kv_dtype")) c.mutable_model()->set_kv_dtype(absl::GetFlag(FLAGS_kv_dtype));
  if (FlagWasGiven("tp")) c.mutable_layout()->set_tp(absl::GetFlag(FLAGS_tp));
  if (FlagWasGiven("pp")) c.mutable_layout()->set_pp(absl::GetFlag(FLAGS_pp));
  if (FlagWasGiven("dp")) c.mutable_layout()->set_dp(absl::GetFlag(FLAGS_dp));
  if (FlagWasGiven("max_batch")) c.set_max_batch(absl::GetFlag(FLAGS_max_batch));
  if (FlagWasGiven("seed")) c.set_seed(absl::GetFlag(FLAGS_seed));
  if (FlagWasGiven("limit")) c.mutable_task()->set_limit(absl::GetFlag(FLAGS_limit));
  if (FlagWasGiven("output_dir")) c.mutable_output()->set_dir(absl::GetFlag(FLAGS_output_dir));
  for (const std::string& s : sets) RETURN_IF_ERROR(SetField(&c, s));
  RETURN_IF_ERROR(ValidateRunConfig(c));
  return c;
}

absl::Status RunEval(Job& job, const config::RunConfig& c) {
  const auto start = std::chrono::steady_clock::now();
  const WorldLayout& layout = job.layout();
  ModelParallelism parallel{layout, job.groups.tp.get(), job.groups.pp.get(),
                            std::vector<int64_t>(c.layout().stage_layers().begin(),
                                                 c.layout().stage_layers().end())};
  ASSIGN_OR_RETURN(parallel.kv_dtype, KvDTypeOf(c.model()));
  absl::StatusOr<RunMethods> methods = PrepareMethods(
      c.method(), c.model().path(), absl::GetFlag(FLAGS_check_rank_agreement));
  RETURN_IF_ERROR(CheckPhase(job, methods.status()));
  ASSIGN_OR_RETURN(ModelBundle bundle,
                   LoadModelForJob(job, c.model().path(),
                                   c.model().backend().empty() ? "cpu" : c.model().backend(),
                                   /*require_tokenizer=*/true, parallel, methods->options));
  bundle.methods = *std::move(methods);
  RETURN_IF_ERROR(CheckPhase(job, AttachMethods(bundle.methods, *bundle.model)));
  absl::StatusOr<std::unique_ptr<EvalTask>> task =
      MakeEvalTask(c, bundle.model->config(), *bundle.tokenizer, bundle.methods.runner);
  RETURN_IF_ERROR(CheckPhase(job, task.status()));
  const std::string name = TaskName(c, **task);
  // A method that runs generation steps changes generated tokens only: a task that scores given
  // tokens runs them as a prompt, at full depth, and the method would change nothing.
  const bool scores_given_tokens =
      (*task)->kind() == "perplexity" || (*task)->kind() == "multiple_choice";
  if (bundle.methods.runner != nullptr && scores_given_tokens &&
      bundle.methods.methods[0]->field() == "homer") {
    return CheckPhase(job, absl::UnimplementedError(absl::StrCat(
                               "method.homer: the ", (*task)->kind(), " task with HOMER (each "
                               "segment scored on a fresh compression of everything before it) "
                               "is not built in this version; run HOMER with a generation task "
                               "(passkey, code_generation, generation)")));
  }
  const bool streams = bundle.methods.runner != nullptr &&
                       bundle.methods.runner->StreamsLongInputs();
  if (streams && (*task)->kind() == "multiple_choice") {
    return CheckPhase(job, absl::UnimplementedError(absl::StrCat(
                               "method.", bundle.methods.methods[0]->field(), ": the "
                               "multiple_choice task through a streaming method is not built in "
                               "this version; use perplexity, passkey or a generation task")));
  }
  if (bundle.methods.runner != nullptr && scores_given_tokens && !streams) {
    return CheckPhase(job, absl::InvalidArgumentError(absl::StrCat(
                               "method.", bundle.methods.methods[0]->field(), ": acts on generated "
                               "tokens, and the ", (*task)->kind(), " task scores given tokens "
                               "(a prompt, at full depth), so it would change nothing; remove the "
                               "method or use a generation task (passkey, code_generation, "
                               "generation)")));
  }

  std::vector<size_t> indices;
  for (size_t i = layout.dp_rank(); i < (*task)->size(); i += layout.dp) indices.push_back(i);
  Progress progress(name, static_cast<int64_t>((*task)->size()), layout.dp, job.is_root());
  EvalContext ctx;
  ctx.model = bundle.model.get();
  ctx.tokenizer = bundle.tokenizer.get();
  ctx.config = &c;
  ctx.runner = bundle.methods.runner;
  ctx.replica_leader = layout.tp_rank() == 0 && layout.pp_rank() == 0;
  ctx.progress = [&progress](int64_t n) { progress.Advance(n); };
  absl::StatusOr<std::vector<json>> records = (*task)->Evaluate(indices, ctx);
  RETURN_IF_ERROR(CheckPhase(job, records.status()));
  progress.Finish();

  EvalReport report;
  RETURN_IF_ERROR(GatherRecords(job, std::move(records).value(), ctx.tokens_processed,
                                (*task)->size(), &report.samples, &report.tokens_processed));
  ASSIGN_OR_RETURN(report.peak_rss_bytes_per_rank, PeakRssPerRank(job));
  absl::StatusOr<json> method_run = MethodRunCountersJson(
      bundle.methods, *job.groups.world, bundle.model->config().num_hidden_layers);
  RETURN_IF_ERROR(CheckPhase(job, method_run.status()));
  report.method_run = *std::move(method_run);
  if (!job.is_root()) return absl::OkStatus();
  report.task = name;
  report.kind = (*task)->kind();
  report.metrics = (*task)->Aggregate(report.samples);
  report.task_config = (*task)->Describe();
  report.samples_original = report.samples_effective = (*task)->size();
  report.run_config = c;
  report.layout = layout;
  report.wall_time_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSIGN_OR_RETURN(std::string path, WriteResults(report));
  std::printf("%s", ResultsTable(report).c_str());
  std::fprintf(stderr, "[eval] results: %s (%lld tokens in %.1f s)\n", path.c_str(),
               static_cast<long long>(report.tokens_processed), report.wall_time_s);
  return absl::OkStatus();
}

}  // namespace tessera
