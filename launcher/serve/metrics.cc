#include "launcher/serve/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tessera::serve {
namespace {

const std::vector<double>& LatencyBounds() {
  static const auto* b = new std::vector<double>{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                                 0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                                 20.0,  40.0,  80.0, 160.0};
  return *b;
}

}  // namespace

ServeMetrics::ServeMetrics() {
  for (Histogram* h : {&e2e_, &first_token_, &queue_}) {
    h->bounds = LatencyBounds();
    h->counts.assign(h->bounds.size(), 0);
  }
}

void ServeMetrics::Histogram::Add(double v) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (v <= bounds[i]) {
      ++counts[i];
      break;
    }
  }
  sum += v;
  ++count;
}

void ServeMetrics::Succeeded(int64_t prompt_tokens, int64_t generated_tokens, double e2e_s,
                             double first_token_s, double queue_s) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += prompt_tokens;
  generation_tokens_ += generated_tokens;
  ++success_;
  e2e_.Add(e2e_s);
  if (first_token_s >= 0) first_token_.Add(first_token_s);
  queue_.Add(queue_s);
}

void ServeMetrics::Failed(int http_status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++failures_[http_status];
}

void ServeMetrics::SetRunning(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  running_ = n;
}

void ServeMetrics::Admitted(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  admitted_ += n;
}

std::string ServeMetrics::Text(int64_t waiting, const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string label = absl::StrCat("model_name=\"", model, "\"");
  std::string out;
  auto gauge = [&](const char* name, const char* help, const char* type, int64_t v) {
    absl::StrAppend(&out, "# HELP tessera:", name, " ", help, "\n# TYPE tessera:", name, " ", type,
                    "\ntessera:", name, "{", label, "} ", v, "\n");
  };
  gauge("num_requests_running", "Requests in the engine now.", "gauge", running_);
  gauge("num_requests_waiting", "Requests waiting for the engine.", "gauge", waiting);
  gauge("prompt_tokens_total", "Prompt tokens of finished requests.", "counter", prompt_tokens_);
  gauge("generation_tokens_total", "Generated tokens of finished requests.", "counter",
        generation_tokens_);
  gauge("request_success_total", "Requests answered with 200.", "counter", success_);
  gauge("admitted_requests_total", "Requests that joined a running wave.", "counter", admitted_);
  absl::StrAppend(&out, "# HELP tessera:request_failure_total Requests answered with an error.\n",
                  "# TYPE tessera:request_failure_total counter\n");
  for (const auto& [status, n] : failures_) {
    absl::StrAppend(&out, "tessera:request_failure_total{", label, ",status=\"", status, "\"} ",
                    n, "\n");
  }
  auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    absl::StrAppend(&out, "# HELP tessera:", name, " ", help, "\n# TYPE tessera:", name,
                    " histogram\n");
    int64_t cumulative = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      cumulative += h.counts[i];
      absl::StrAppend(&out, "tessera:", name, "_bucket{", label, ",le=\"",
                      absl::StrFormat("%g", h.bounds[i]), "\"} ", cumulative, "\n");
    }
    absl::StrAppend(&out, "tessera:", name, "_bucket{", label, ",le=\"+Inf\"} ", h.count, "\n",
                    "tessera:", name, "_sum{", label, "} ", absl::StrFormat("%.6f", h.sum), "\n",
                    "tessera:", name, "_count{", label, "} ", h.count, "\n");
  };
  histogram("e2e_request_latency_seconds", "Request latency, arrival to answer.", e2e_);
  histogram("time_to_first_token_seconds", "Arrival to the first generated token.", first_token_);
  histogram("request_queue_time_seconds", "Arrival to the start of the request's wave.", queue_);
  return out;
}

}  // namespace tessera::serve
