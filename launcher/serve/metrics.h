// ServeMetrics: the figures GET /metrics reports in the Prometheus text format, under the names
// vLLM uses with the prefix `tessera:` (num_requests_running, num_requests_waiting,
// prompt_tokens_total, generation_tokens_total, request_success_total, the latency histograms
// e2e_request_latency_seconds, time_to_first_token_seconds and request_queue_time_seconds),
// plus request_failure_total by HTTP status and admitted_requests_total (requests that joined a
// wave while it generated). Thread-safe.
#ifndef TESSERA_LAUNCHER_SERVE_METRICS_H_
#define TESSERA_LAUNCHER_SERVE_METRICS_H_

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace tessera::serve {

class ServeMetrics {
 public:
  ServeMetrics();

  void Succeeded(int64_t prompt_tokens, int64_t generated_tokens, double e2e_s,
                 double first_token_s, double queue_s);
  void Failed(int http_status);
  void SetRunning(int64_t n);
  void Admitted(int64_t n);

  // `waiting`: jobs in the queue now; `model`: the served name (the model_name label).
  std::string Text(int64_t waiting, const std::string& model);

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<int64_t> counts;  // per bound, not cumulative
    double sum = 0;
    int64_t count = 0;
    void Add(double v);
  };
  std::mutex mu_;
  int64_t running_ = 0, prompt_tokens_ = 0, generation_tokens_ = 0, success_ = 0, admitted_ = 0;
  std::map<int, int64_t> failures_;
  Histogram e2e_, first_token_, queue_;
};

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_METRICS_H_
