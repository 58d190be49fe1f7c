#include "launcher/serve/serve_job.h"

#include "absl/strings/str_cat.h"

namespace tessera::serve {

void ServeJob::PushText(absl::string_view text) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_text_.append(text.data(), text.size());
  cv_.notify_all();
}

void ServeJob::Finish(absl::Status status, std::vector<ChoiceResult> choices) {
  std::lock_guard<std::mutex> lock(mu_);
  status_ = std::move(status);
  choices_ = std::move(choices);
  done_ = true;
  cv_.notify_all();
}

std::string ServeJob::WaitText(absl::Duration timeout, bool* done) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
               [&] { return done_ || !pending_text_.empty(); });
  *done = done_;
  std::string out;
  out.swap(pending_text_);
  return out;
}

void ServeJob::WaitDone() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
}

absl::Status WorkQueue::Submit(std::shared_ptr<ServeJob> job) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return absl::UnavailableError("the server is shutting down");
  if (jobs_.size() >= max_waiting_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many requests: ", jobs_.size(), " are waiting (--max-waiting-requests ",
        max_waiting_, "); retry later"));
  }
  jobs_.push_back(std::move(job));
  cv_.notify_one();
  return absl::OkStatus();
}

std::vector<std::shared_ptr<ServeJob>> WorkQueue::Take(size_t max_sequences, absl::Duration wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(wait), [&] { return closed_ || !jobs_.empty(); });
  std::vector<std::shared_ptr<ServeJob>> out;
  size_t sequences = 0;
  while (!closed_ && !jobs_.empty()) {
    const size_t n = jobs_.front()->sequences();
    if (!out.empty() && sequences + n > max_sequences) break;
    sequences += n;
    out.push_back(std::move(jobs_.front()));
    jobs_.pop_front();
  }
  return out;
}

std::vector<std::shared_ptr<ServeJob>> WorkQueue::TakeReady(
    size_t max_sequences, const std::function<bool(const ServeJob&)>& admissible) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<ServeJob>> out;
  size_t sequences = 0;
  while (!closed_ && !jobs_.empty() && admissible(*jobs_.front())) {
    const size_t n = jobs_.front()->sequences();
    if (sequences + n > max_sequences) break;
    sequences += n;
    out.push_back(std::move(jobs_.front()));
    jobs_.pop_front();
  }
  return out;
}

void WorkQueue::Close() {
  std::deque<std::shared_ptr<ServeJob>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    left.swap(jobs_);
    cv_.notify_all();
  }
  for (auto& job : left) job->Finish(absl::UnavailableError("the server is shutting down"), {});
}

size_t WorkQueue::waiting() {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

}  // namespace tessera::serve
