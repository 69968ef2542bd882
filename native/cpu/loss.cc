// Softmax cross-entropy with label smoothing (torch.nn.CrossEntropyLoss, reduction 'mean'): the loss and its
// gradient with respect to the logits in one pass. Not for: softmax as a layer (RepVGG has none).
// Plain C++ rather than oneDNN: (N, K) is tiny next to the network (K = 10 classes for Fashion-MNIST), and the
// loss needs float64 accumulation, which oneDNN's softmax (float32 in, float32 out) cannot give.
#include <algorithm>
#include <cmath>
#include <string>

#include "../core/check.h"
#include "../core/ops.h"

namespace repvgg::cpu {

double softmax_cross_entropy(const SoftmaxCrossEntropyParams& p, const float* logits, const int32_t* labels, float* dlogits) {
  const int64_t n = p.batch, k = p.classes;
  const double ls = p.label_smoothing;
  RV_CHECK(n >= 1 && k >= 1, "ERR_SHAPE", "softmax_cross_entropy: empty logits");
  RV_CHECK(ls >= 0 && ls <= 1, "ERR_ARG_VALUE", "label smoothing must be in [0, 1], got " + std::to_string(ls));
  for (int64_t row = 0; row < n; row++) {
    RV_CHECK(labels[row] >= 0 && labels[row] < k, "ERR_ARG_VALUE",
             "labels[" + std::to_string(row) + "] = " + std::to_string(labels[row]) + " is outside [0, " + std::to_string(k) + ")");
  }
  double total = 0;
  for (int64_t row = 0; row < n; row++) {
    const float* z = logits + row * k;  // (K)
    float* dz = dlogits + row * k;      // (K)
    const int64_t label = labels[row];
    // log softmax_j = z_j - m - log(sum exp(z - m)); subtracting the max m keeps every exp() <= 1.
    const double m = *std::max_element(z, z + k);
    double sum_exp = 0, sum_z = 0;
    for (int64_t j = 0; j < k; j++) {
      sum_exp += std::exp(static_cast<double>(z[j]) - m);
      sum_z += z[j];
    }
    const double log_sum = m + std::log(sum_exp);  // log sum exp(z)
    // -sum_j target_j log softmax_j with target = (1 - ls) onehot + ls / K, and sum_j target_j = 1.
    total += log_sum - (1 - ls) * z[label] - ls / static_cast<double>(k) * sum_z;
    for (int64_t j = 0; j < k; j++) {
      const double target = (j == label ? 1 - ls : 0) + ls / static_cast<double>(k);
      dz[j] = static_cast<float>((std::exp(static_cast<double>(z[j]) - log_sum) - target) / static_cast<double>(n));
    }
  }
  return total / static_cast<double>(n);
}

}  // namespace repvgg::cpu
