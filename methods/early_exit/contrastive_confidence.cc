#include "methods/early_exit/contrastive_confidence.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tessera {
namespace {

constexpr double kPlausibility = 0.1;  // alpha of V_head, as in Li et al.

// 0.5 KL(P || M) + 0.5 KL(Q || M), M = (P + Q) / 2, over the head entries (unnormalised).
double HeadJsd(const std::vector<double>& p, const std::vector<double>& q,
               const std::vector<int64_t>& head) {
  double jsd = 0;
  for (int64_t x : head) {
    const double m = 0.5 * (p[x] + q[x]);
    if (p[x] > 0) jsd += 0.5 * p[x] * std::log(p[x] / m);
    if (q[x] > 0) jsd += 0.5 * q[x] * std::log(q[x] / m);
  }
  return jsd;
}

}  // namespace

std::vector<double> SoftmaxOf(absl::Span<const float> logits) {
  double max = -std::numeric_limits<double>::infinity();
  for (float z : logits) max = std::max<double>(max, z);
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(logits[i] - max);
  for (double& v : p) v /= sum;
  return p;
}

ContrastiveResult JsdContrastiveConfidence(const std::vector<double>& expert, int64_t expert_blocks,
                                           const std::vector<const std::vector<double>*>& amateurs,
                                           const std::vector<int64_t>& amateur_blocks) {
  const double top = *std::max_element(expert.begin(), expert.end());
  std::vector<int64_t> head;
  for (size_t x = 0; x < expert.size(); ++x) {
    if (expert[x] >= kPlausibility * top) head.push_back(static_cast<int64_t>(x));
  }
  ContrastiveResult r;
  double best = -1;
  for (size_t i = 0; i < amateurs.size(); ++i) {
    const double score = HeadJsd(expert, *amateurs[i], head) /
                         static_cast<double>(expert_blocks - amateur_blocks[i]);
    if (score > best) {
      best = score;
      r.amateur = static_cast<int>(i);
    }
  }
  const std::vector<double>& amateur = *amateurs[r.amateur];
  // s on the head: softmax of log p_l - log p_m over the head, times sum p_l (= 1).
  std::vector<double> contrast(head.size());
  double max = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < head.size(); ++i) {
    contrast[i] = std::log(expert[head[i]]) - std::log(amateur[head[i]]);
    max = std::max(max, contrast[i]);
  }
  double sum = 0;
  for (double& v : contrast) sum += v = std::exp(v - max);
  std::vector<double> s = expert;  // off the head: p_l
  for (size_t i = 0; i < head.size(); ++i) s[head[i]] = contrast[i] / sum;
  double first = 0, second = 0;
  for (double v : s) {
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  r.confidence = first - second;
  return r;
}

}  // namespace tessera
