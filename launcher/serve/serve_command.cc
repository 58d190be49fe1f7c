// `tessera serve`: the leader rank of each model replica (its rank 0; with --dp D, D leaders on
// --port + replica) serves HTTP and runs the engine loop: it takes waves of queued requests,
// sends each to the replica's other ranks, and every rank of the replica runs it
// (replica_wave.h); replicas run independently, on a communicator of their own. SIGTERM /
// SIGINT stop the server on every rank (with --dp, each replica's leader needs the signal, as
// mpirun and scancel deliver it); a rank that fails or stops answering ends the job on every
// rank (AbortJob) with its cause.
#include <httplib.h>

#include <csignal>
#include <cstdio>
#include <deque>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "launcher/model_from_flags.h"
#include "launcher/serve/http_api.h"
#include "launcher/serve/replica_wave.h"
#include "runtime/context_limit.h"

namespace tessera {
namespace {

using serve::ServeJob;
using serve::WaveKind;

constexpr int kWaveTag = 11;
std::atomic<bool> stop_requested{false};

void OnStopSignal(int) { stop_requested.store(true); }

bool IsCommunicationFailure(const absl::Status& s) {
  return s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kAborted ||
         s.code() == absl::StatusCode::kDataLoss;
}

std::string ServedName(const std::string& model_dir) {
  const std::string given = absl::GetFlag(FLAGS_served_model_name);
  if (!given.empty()) return given;
  std::string dir = model_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

// The other ranks of `replica` (the ranks of this process's model replica; rank 0 leads it).
absl::Status SendToReplica(Communicator& replica, const std::string& message) {
  for (int r = 1; r < replica.size(); ++r) {
    RETURN_IF_ERROR(SendString(replica, message, r, kWaveTag));
  }
  return absl::OkStatus();
}

// One wave on every rank; a failure that all ranks share fails the wave's requests, a
// communication failure ends the job.
absl::Status RunAgreedWave(Job& job, Communicator& replica, ModelBundle& bundle,
                           const std::vector<const serve::CompletionRequest*>& requests,
                           const serve::WaveSettings& settings, const serve::WaveText& on_text,
                           const serve::WaveFeed& feed,
                           std::vector<std::vector<serve::ChoiceResult>>* out) {
  auto results = serve::RunWave(bundle, requests, settings, on_text, &feed);
  const Outcome outcome = AgreeOnOutcomeIn(job, replica, results.status());
  if (results.ok() && outcome.status.ok()) *out = *std::move(results);
  return results.ok() ? outcome.status : results.status();
}

absl::Status LeaderLoop(Job& job, Communicator& replica, ModelBundle& bundle,
                        serve::ServeState& state, const serve::WaveSettings& settings) {
  absl::Time last_tick = absl::Now();
  const size_t max_sequences = static_cast<size_t>(settings.generator.max_batch);
  while (!stop_requested.load()) {
    std::vector<std::shared_ptr<ServeJob>> jobs =
        state.queue->Take(max_sequences, absl::Milliseconds(100));
    if (jobs.empty()) {
      if (absl::Now() - last_tick > absl::Seconds(1)) {
        if (absl::Status s = SendToReplica(replica, serve::EncodeWaveMessage(WaveKind::kIdle, {}));
            !s.ok()) {
          AbortJob(job, s);
        }
        last_tick = absl::Now();
      }
      continue;
    }
    std::vector<const serve::CompletionRequest*> requests;
    for (const auto& j : jobs) requests.push_back(&j->request());
    if (absl::Status s =
            SendToReplica(replica, serve::EncodeWaveMessage(WaveKind::kWave, requests));
        !s.ok()) {
      AbortJob(job, s);
    }
    last_tick = absl::Now();
    std::vector<absl::Time> started(jobs.size(), absl::Now());
    std::vector<bool> answered(jobs.size(), false);
    state.metrics->SetRunning(static_cast<int64_t>(jobs.size()));
    serve::WaveText on_text = [&](size_t i, absl::string_view text) {
      if (jobs[i]->first_text == absl::InfinitePast()) jobs[i]->first_text = absl::Now();
      if (jobs[i]->request().stream) jobs[i]->PushText(text);
    };
    auto answer = [&](size_t i, std::vector<serve::ChoiceResult> choices) {
      const absl::Time end = absl::Now();
      const serve::CompletionRequest& r = jobs[i]->request();
      int64_t prompt = 0, generated = 0;
      for (const auto& p : r.prompts) prompt += static_cast<int64_t>(p.ids.size());
      for (const auto& c : choices) generated += static_cast<int64_t>(c.token_ids.size());
      const absl::Time first =
          jobs[i]->first_text == absl::InfinitePast() ? end : jobs[i]->first_text;
      state.metrics->Succeeded(
          prompt, generated, absl::ToDoubleSeconds(end - jobs[i]->enqueued),
          generated > 0 ? absl::ToDoubleSeconds(first - jobs[i]->enqueued) : -1,
          absl::ToDoubleSeconds(started[i] - jobs[i]->enqueued));
      jobs[i]->Finish(absl::OkStatus(), std::move(choices));
      answered[i] = true;
    };
    // Continuous admission: before each generation step, generation requests that fit the free
    // slots join the wave; the replica's other ranks get them in an admit message (every step,
    // empty or not, so that all ranks admit alike).
    // Requests that score their generated tokens wait for the end of generation, so a wave
    // that holds one admits nothing, and admission stops at a queued request that cannot join
    // (scoring, or log-probabilities), which starts the next wave: arrival order is kept.
    auto joins = [&](const serve::CompletionRequest& r) {
      return serve::RunsGeneration(r, settings) && r.logprobs < 0;
    };
    bool admitting = true;
    for (const auto& j : jobs) {
      if (serve::RunsGeneration(j->request(), settings) && j->request().logprobs >= 0) {
        admitting = false;
      }
    }
    serve::WaveFeed feed;
    feed.admit =
        [&](int32_t free_slots) -> absl::StatusOr<std::vector<const serve::CompletionRequest*>> {
      std::vector<const serve::CompletionRequest*> more;
      if (free_slots > 0 && admitting) {
        for (auto& j :
             state.queue->TakeReady(static_cast<size_t>(free_slots),
                                    [&](const ServeJob& j) { return joins(j.request()); })) {
          jobs.push_back(std::move(j));
          started.push_back(absl::Now());
          answered.push_back(false);
          more.push_back(&jobs.back()->request());
        }
        state.metrics->SetRunning(static_cast<int64_t>(jobs.size()));
        state.metrics->Admitted(static_cast<int64_t>(more.size()));
      }
      if (absl::Status s = SendToReplica(replica, serve::EncodeWaveMessage(WaveKind::kAdmit, more));
          !s.ok()) {
        AbortJob(job, s);
      }
      last_tick = absl::Now();
      return more;
    };
    feed.done = [&](size_t i, const std::vector<serve::ChoiceResult>& choices) {
      answer(i, choices);
    };
    std::vector<std::vector<serve::ChoiceResult>> results;
    const absl::Status status =
        RunAgreedWave(job, replica, bundle, requests, settings, on_text, feed, &results);
    if (IsCommunicationFailure(status)) AbortJob(job, status);
    state.metrics->SetRunning(0);
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (answered[i]) continue;
      if (status.ok()) {
        answer(i, std::move(results[i]));
      } else {
        jobs[i]->Finish(status, {});
      }
    }
  }
  return absl::OkStatus();
}

// The leader's next message, with its requests; a failure to receive or read it, or a message
// of another kind than `expected` (when given), ends the job.
WaveKind ReceiveFromLeader(Job& job, Communicator& replica,
                           std::vector<serve::CompletionRequest>* requests,
                           std::optional<WaveKind> expected = std::nullopt) {
  absl::StatusOr<std::string> message = RecvString(replica, 0, kWaveTag);
  if (!message.ok()) {
    AbortJob(job, absl::Status(message.status().code(),
                               absl::StrCat("the serving rank 0 stopped answering: ",
                                            message.status().message())));
  }
  WaveKind kind;
  if (absl::Status s = serve::DecodeWaveMessage(*message, &kind, requests); !s.ok()) {
    AbortJob(job, s);
  }
  if (expected.has_value() ? kind != *expected : kind == WaveKind::kAdmit) {
    AbortJob(job, absl::DataLossError("the replica's leader sent a wave message out of turn"));
  }
  return kind;
}

absl::Status FollowerLoop(Job& job, Communicator& replica, ModelBundle& bundle,
                          const serve::WaveSettings& settings) {
  while (true) {
    std::vector<serve::CompletionRequest> requests;
    const WaveKind kind = ReceiveFromLeader(job, replica, &requests);
    if (kind == WaveKind::kStop) return absl::OkStatus();
    if (kind == WaveKind::kIdle) continue;
    std::vector<const serve::CompletionRequest*> refs;
    for (const auto& r : requests) refs.push_back(&r);
    // The leader's admit message before each generation step.
    std::deque<serve::CompletionRequest> admitted;  // stable while the wave runs
    serve::WaveFeed feed;
    feed.admit = [&](int32_t) -> absl::StatusOr<std::vector<const serve::CompletionRequest*>> {
      std::vector<serve::CompletionRequest> more;
      ReceiveFromLeader(job, replica, &more, WaveKind::kAdmit);
      std::vector<const serve::CompletionRequest*> out;
      for (auto& r : more) {
        admitted.push_back(std::move(r));
        out.push_back(&admitted.back());
      }
      return out;
    };
    std::vector<std::vector<serve::ChoiceResult>> ignored;
    const absl::Status status =
        RunAgreedWave(job, replica, bundle, refs, settings, nullptr, feed, &ignored);
    if (IsCommunicationFailure(status)) AbortJob(job, status);
  }
}

}  // namespace

absl::Status RunServe(Job& job, const config::MethodSettings& method_settings) {
  const WorldLayout& layout = job.layout();
  // World ranks are (replica, stage, tp rank) with tp fastest: a replica's ranks are contiguous.
  ASSIGN_OR_RETURN(
      std::unique_ptr<Communicator> replica,
      job.groups.world->Split(layout.dp_rank(), layout.pp_rank() * layout.tp + layout.tp_rank(),
                              "replica"));
  const bool leader = replica->rank() == 0;
  ASSIGN_OR_RETURN(ModelBundle bundle, LoadModelFromFlags(job, method_settings,
                                                          /*require_tokenizer=*/true));
  const ModelConfig& config = bundle.model->config();
  serve::WaveSettings settings;
  settings.generator.max_batch = absl::GetFlag(FLAGS_max_batch);
  settings.generator.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  settings.generator.micro_batches = absl::GetFlag(FLAGS_micro_batches);
  settings.generator.runner = bundle.methods.runner;
  // A method that runs the generation steps itself (HARP, early exit) changes generated tokens
  // only; one that changes attention everywhere (sparse attention) also scores prompts.
  settings.method = bundle.methods.runner != nullptr;
  absl::StatusOr<int64_t> context = ContextLimit(config, settings.generator.max_seq_len);
  RETURN_IF_ERROR(CheckPhase(job, context.status()));

  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGINT, OnStopSignal);
  if (!leader) {
    RETURN_IF_ERROR(CheckPhase(job, absl::OkStatus()));  // the leaders' binds
    return FollowerLoop(job, *replica, bundle, settings);
  }

  serve::ServeState state;
  state.limits.model_name = ServedName(absl::GetFlag(FLAGS_model));
  state.limits.context = *context;
  state.limits.vocab_size = config.vocab_size;
  state.limits.bos_id = config.bos_token_id;
  state.limits.eos_id = config.eos_token_ids.empty() ? 2 : config.eos_token_ids[0];
  std::vector<std::string> names;
  for (const auto& m : bundle.methods.methods) {
    if (m->Runner() != nullptr) names.push_back(std::string(m->field()));
  }
  state.limits.method = absl::StrJoin(names, ", ");
  state.tokenizer = bundle.tokenizer.get();
  const std::string chat = absl::GetFlag(FLAGS_chat_template);
  absl::Status flags_ok;
  if (chat != "none" && chat != "llama-2") {
    flags_ok = absl::InvalidArgumentError(
        absl::StrCat("--chat-template ", chat, ": must be none or llama-2"));
  }
  state.chat_template = chat == "llama-2";
  serve::WorkQueue queue(static_cast<size_t>(absl::GetFlag(FLAGS_max_waiting_requests)));
  serve::ServeMetrics metrics;
  state.queue = &queue;
  state.metrics = &metrics;

  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(64); };
  server.set_payload_max_length(size_t{64} << 20);
  serve::RegisterRoutes(server, state);
  const std::string host = absl::GetFlag(FLAGS_host);
  int port = absl::GetFlag(FLAGS_port);
  if (port != 0) port += layout.dp_rank();  // replica d listens on --port + d
  if (flags_ok.ok()) {
    if (port == 0) {
      port = server.bind_to_any_port(host);
      if (port < 0) flags_ok = absl::UnavailableError(absl::StrCat("cannot listen on ", host));
    } else if (!server.bind_to_port(host, port)) {
      flags_ok = absl::InvalidArgumentError(
          absl::StrCat("--host ", host, " --port ", port,
                       ": cannot listen there (in use, or not an address "
                       "of this machine); choose another --port"));
    }
  }
  RETURN_IF_ERROR(CheckPhase(job, flags_ok));
  std::thread http([&server] { server.listen_after_bind(); });
  std::fprintf(stderr,
               "[tessera] serving %s on http://%s:%d (replica %d of %d, tp=%d pp=%d, context "
               "%lld)\n",
               state.limits.model_name.c_str(), host.c_str(), port, layout.dp_rank(), layout.dp,
               layout.tp, layout.pp, static_cast<long long>(*context));
  std::fflush(stderr);
  const absl::Status loop = LeaderLoop(job, *replica, bundle, state, settings);
  queue.Close();  // waiting requests are answered 503, so that no handler blocks the stop
  server.stop();
  http.join();
  if (absl::Status s = SendToReplica(*replica, serve::EncodeWaveMessage(WaveKind::kStop, {}));
      !s.ok()) {
    AbortJob(job, s);
  }
  std::fprintf(stderr, "[tessera] server stopped\n");
  return loop;
}

}  // namespace tessera
