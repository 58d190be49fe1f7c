// ServeJob: one HTTP request on its way through the server, shared by the HTTP thread that made
// it (which waits for it, or streams its text) and the engine thread that runs it.
// WorkQueue: the bounded queue of jobs waiting for the engine.
#ifndef TESSERA_LAUNCHER_SERVE_SERVE_JOB_H_
#define TESSERA_LAUNCHER_SERVE_SERVE_JOB_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "launcher/serve/completion_request.h"
#include "runtime/scorer.h"

namespace tessera::serve {

// What the engine produced for one prompt of a request.
struct ChoiceResult {
  std::vector<int32_t> token_ids;  // generated ids (an EOS that ended the sequence included)
  std::string text;                // generated text (stop string and EOS cut)
  std::string finish_reason = "length";  // "stop" (EOS or a stop string) or "length"
  // With logprobs: the scores of prompt tokens 1.. (with echo) and of each generated token.
  std::vector<ScoredToken> prompt_scores, generated_scores;
};

class ServeJob {
 public:
  explicit ServeJob(CompletionRequest request) : request_(std::move(request)) {}

  const CompletionRequest& request() const { return request_; }
  size_t sequences() const { return request_.prompts.size(); }

  // Engine side.
  void PushText(absl::string_view text);  // streamed text of the (single) prompt
  void Finish(absl::Status status, std::vector<ChoiceResult> choices);

  // HTTP side: waits up to `timeout` for new text or the end; returns the text pushed since the
  // last call; `done` once finished (then status() and choices() are final).
  std::string WaitText(absl::Duration timeout, bool* done);
  void WaitDone();
  const absl::Status& status() const { return status_; }
  const std::vector<ChoiceResult>& choices() const { return choices_; }

  absl::Time enqueued = absl::Now();
  absl::Time first_text = absl::InfinitePast();  // set by the engine with the first token

 private:
  CompletionRequest request_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_text_;
  bool done_ = false;
  absl::Status status_;
  std::vector<ChoiceResult> choices_;
};

class WorkQueue {
 public:
  explicit WorkQueue(size_t max_waiting) : max_waiting_(max_waiting) {}

  // ResourceExhausted when `max_waiting` jobs already wait; Unavailable once closed.
  absl::Status Submit(std::shared_ptr<ServeJob> job);
  // Jobs in arrival order while their prompts fit `max_sequences` (at least one job when any
  // waits); waits up to `wait` for the first. Empty after `wait` or once closed.
  std::vector<std::shared_ptr<ServeJob>> Take(size_t max_sequences, absl::Duration wait);
  // Without waiting: jobs from the front, in order, while `admissible` holds for them and their
  // prompts fit `max_sequences`; stops at the first that does not (arrival order is kept).
  std::vector<std::shared_ptr<ServeJob>> TakeReady(
      size_t max_sequences, const std::function<bool(const ServeJob&)>& admissible);
  // Refuses new jobs; jobs still waiting fail with Unavailable.
  void Close();
  size_t waiting();

 private:
  const size_t max_waiting_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ServeJob>> jobs_;
  bool closed_ = false;
};

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_SERVE_JOB_H_
