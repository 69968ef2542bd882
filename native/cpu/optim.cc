// The optimizer's per-step updates over every parameter at once: SGD (momentum, Nesterov, weight decay) and the
// weights' exponential moving average (plain loops the compiler vectorizes, spread over the OpenMP team),
// and the official custom L2 term's gradients. Not for: learning-rate schedules (lib/train/schedule.ts).
#include "../core/ops.h"

namespace repvgg::cpu {

// Arithmetic is double, as in the TypeScript reference whose numbers are doubles, and every float32 store rounds
// once: the results are bit-identical to it (this file must not be compiled with FMA contraction, which would fuse
// momentum * b + d into one rounding; the x86-64 baseline flags the addon is built with have no FMA).
void sgd_step(const SgdParams& p, const std::vector<SgdTensor>& tensors) {
  const double lr = p.lr, momentum = p.momentum;
  const bool nesterov = p.nesterov;
  for (const SgdTensor& t : tensors) {
    float* w = t.weight;
    const float* g = t.grad;
    float* buf = t.momentum_buffer;
    const double wd = t.weight_decay;
    if (buf == nullptr) {
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < t.count; ++i) {
        const double d = static_cast<double>(g[i]) + wd * static_cast<double>(w[i]);
        w[i] = static_cast<float>(static_cast<double>(w[i]) - lr * d);
      }
    } else {
      const bool first = t.first;
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < t.count; ++i) {
        double d = static_cast<double>(g[i]) + wd * static_cast<double>(w[i]);
        const double b = first ? d : momentum * static_cast<double>(buf[i]) + d;
        buf[i] = static_cast<float>(b);
        d = nesterov ? d + momentum * b : b;
        w[i] = static_cast<float>(static_cast<double>(w[i]) - lr * d);
      }
    }
  }
}

void ema_update(double decay, const std::vector<EmaTensor>& tensors) {
  const double keep = decay, take = 1 - decay;
  for (const EmaTensor& t : tensors) {
    float* s = t.shadow;
    const float* c = t.current;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < t.count; ++i) {
      s[i] = static_cast<float>(keep * static_cast<double>(s[i]) + take * static_cast<double>(c[i]));
    }
  }
}

double custom_l2(double weight_decay, const std::vector<CustomL2Block>& blocks) {
  constexpr int kCentre = 4;  // the centre tap of a 3x3 kernel
  double total = 0;
  for (const CustomL2Block& b : blocks) {
    for (int64_t o = 0; o < b.out_channels; ++o) {
      const double a3 = b.t3[o], a1 = b.t1[o];
      const double norm = a3 * a3 + a1 * a1;
      for (int64_t i = 0; i < b.per_out; ++i) {
        const int64_t base = (o * b.per_out + i) * 9;
        for (int tap = 0; tap < 9; ++tap) {
          if (tap == kCentre) continue;
          const double v = b.k3[base + tap];
          total += v * v;
          b.k3_grad[base + tap] = static_cast<float>(static_cast<double>(b.k3_grad[base + tap]) + weight_decay * v);
        }
        const double c3 = b.k3[base + kCentre], c1 = b.k1[o * b.per_out + i];
        const double eq = c3 * a3 + c1 * a1;
        total += (eq * eq) / norm;
        b.k3_grad[base + kCentre] = static_cast<float>(static_cast<double>(b.k3_grad[base + kCentre]) + (weight_decay * eq * a3) / norm);
        b.k1_grad[o * b.per_out + i] =
            static_cast<float>(static_cast<double>(b.k1_grad[o * b.per_out + i]) + (weight_decay * eq * a1) / norm);
      }
    }
  }
  return 0.5 * weight_decay * total;
}

}  // namespace repvgg::cpu
