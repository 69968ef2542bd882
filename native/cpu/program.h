// A whole network compiled for oneDNN: a flat list of steps (conv, batch norm, add, squeeze-excitation) over a
// small pool of activation buffers, then global average pooling and the linear classifier. The deployed RepVGG
// is just conv(+bias+ReLU) steps over two ping-pong buffers; the training-time form (eval mode) uses four.
// Primitives, blocked layouts and reordered weights are built once per input shape ("plan") and cached.
// Not for: single ops on plain NCHW buffers (ops.h) or deciding the step list (lib/engine.ts does that).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../core/network_spec.h"

namespace repvgg::cpu {

// int8: the conv steps marked int8 run u8 x s8 -> s32 with fused bias and ReLU (see ConvStepSpec); every other
// step, the first layer and the head run in float32.
enum class Precision { fp32, bf16, int8 };
// How 3x3 stride-1 convolutions pick their algorithm: measure direct, Winograd F(2x2, 3x3) and F(4x4, 3x3) per layer
// (auto), or force one (winograd = F(4x4)). Winograd is our own kernel (winograd.h) and needs float32 channels-last
// activations, which oneDNN's direct kernels choose on AVX-512; elsewhere every conv runs direct.
enum class ConvAlgorithm { auto_measure, direct, winograd, winograd2x2 };

// How auto_measure times each algorithm for a group of convs (program.cc measure_conv_choices): by whole forwards,
// by the group's own convs inside forwards, or (by_length) by convs when a forward takes 100 ms or more.
enum class AutoTiming { by_length, forward, convs };

// How a batch of several images uses the compute threads (program.cc, Program::splits_images): each thread computes
// whole images with single-threaded plans of kImagesPerChunk or 1 images, taking the next chunk when done, so no
// thread waits for another inside the batch (images); or every primitive of one batch-sized plan is split over all
// threads (layers), as for a single image.
enum class BatchThreading { images, layers };

struct ProgramSpec : NetworkSpec {
  Precision precision = Precision::fp32;
  ConvAlgorithm conv_algorithm = ConvAlgorithm::auto_measure;
  AutoTiming auto_timing = AutoTiming::by_length;
  BatchThreading batch_threading = BatchThreading::images;
};

// What one compiled conv step ended up using, for reports.
struct ConvChoice {
  int step = 0;
  std::string algorithm;       // "direct", "winograd" (F(4x4, 3x3)), "winograd2x2", "im2col" or "int8"
  std::string implementation;  // oneDNN's implementation name, e.g. "brgconv:avx512_core", or the Winograd kernel's
  // 'auto': with this conv's shape group on each algorithm, the ms of a whole forward or of the group's convs
  // (PlanReport::auto_timing); -1 = not measured
  double direct_ms = -1, winograd_ms = -1, winograd2x2_ms = -1;
  std::string layout;  // of the activations it read and wrote: "NHWC", "NCHW" or "blocked"
};

struct PlanReport {
  int64_t batch = 0, height = 0, width = 0;
  std::string layout;            // of the first conv's output, as the primitives chose it: "NHWC", "NCHW" or "blocked"
                                 // (later convs may run on another: ConvChoice::layout)
  int64_t activation_bytes = 0;  // all activation buffers of the plan together
  int64_t workspace_bytes = 0;   // the Winograd transform scratch, shared by the plan's Winograd and im2col convs
  int64_t weight_bytes = 0;      // weights in the layouts the primitives chose (Winograd's transformed ones included)
  std::vector<ConvChoice> convs;
  std::string auto_timing;  // how 'auto' timed the algorithms: "forward" or "convs"; empty when nothing was measured
  double auto_timing_forward_ms = -1;  // the all-direct forward after a warm-up that AutoTiming::by_length decides by; -1 = none
  // "layers": one plan for the batch on all threads; "images": `threads` single-threaded copies of plans for
  // chunks of images_per_plan (and of 1) images. convs, layout and auto_timing are then those of the
  // images_per_plan plan, activation_bytes and workspace_bytes those of all the copies of both chunk sizes,
  // weight_bytes those of one copy (the copies share their weights).
  std::string threading = "layers";
  int64_t images_per_plan = 0, threads = 0;
  std::string head_precision;  // the classifier's: "fp32" or "bf16" (Plan::compile_head)
};

// Where a plan's time goes: each primitive timed on its own (the stream waited after each), over several runs.
struct ProfileEntry {
  int step = -1;      // index into the spec's steps; -1: the input reorder; steps.size(): the head
  std::string what;   // "conv", "int8 conv", "quantize", "batchnorm", "add", "se", "reorder", "global mean", "classifier"
  double ms = 0;      // mean per run
};

struct Profile {
  std::vector<ProfileEntry> entries;
  double network_ms = 0;  // median time of a whole run() (primitives back to back, one wait at the end)
  int runs = 0;
  // The plan profiled: the batch's own on every thread ("layers"), or, when the batch's images are split over the
  // threads ("images"), one thread's plan for a chunk of `images` images.
  std::string threading = "layers";
  int64_t images = 0, threads = 0;
};

class Plan;

// Winograd-transformed weights by conv step, shared by the plans (batch sizes) of a Program that use them; weak, so
// that a layer no plan runs with Winograd holds no transformed copy.
using WinogradWeightCache = std::map<std::pair<int, int>, std::weak_ptr<const dnnl::memory>>;  // (step, tile side)

// Weights reordered into the layout a conv primitive chose, by conv step: plans whose primitives chose the same
// layout (other batch sizes, the per-thread copies of image-parallel plans) share one copy. Weak, like the above.
struct ReorderedWeights {
  dnnl::memory::desc md;
  std::weak_ptr<const dnnl::memory> weights;
};
using ReorderedWeightCache = std::map<int, std::vector<ReorderedWeights>>;

// One consecutive piece of a run's input: `images` images of (in_channels, height, width) float32 NCHW.
struct InputPart {
  const float* data;
  int64_t images;
};

class Program {
 public:
  explicit Program(ProgramSpec spec);
  ~Program();
  // input: (batch, in_channels, height, width) float32 NCHW; logits: (batch, classes) float32.
  void run(int64_t batch, int64_t height, int64_t width, const float* input, float* logits);
  // As run(), with the input's images in consecutive parts, each reordered straight into the network's input (a
  // server's batch of requests, without first copying them into one buffer); the images after the parts' total, up
  // to batch, are zeros.
  void run_parts(int64_t batch, int64_t height, int64_t width, const std::vector<InputPart>& parts, float* logits);
  // Compiles (and measures) the plans for this input shape now, so that the first run() is not slow. Batches that
  // split by images share their plans: preparing one of them prepares all of them (at this height and width).
  PlanReport prepare(int64_t batch, int64_t height, int64_t width);
  // Whether run() splits a batch of this size by images over the threads (BatchThreading::images), which the
  // OpenMP thread count decides (the compute thread has the process's default, as every thread that did not set one).
  bool splits_images(int64_t batch) const { return splits_images(batch, omp_get_max_threads()); }
  // Times every primitive of this input shape's plan on its own, runs times (see Profile).
  Profile profile(int64_t batch, int64_t height, int64_t width, int runs);
  const ProgramSpec& spec() const { return spec_; }

  // Images per chunk of an image-parallel batch (the rest go one at a time). On 2 cores of a Zen 5 EPYC, two
  // single-threaded RepVGG-A0 fp32 loops ran 241, 251, 261 and 265 img/s together at 1, 2, 4 and 8 images per run,
  // against 241 for one two-thread loop at batch 8.
  static constexpr int64_t kImagesPerChunk = 4;

 private:
  // (batch, height, width, copies): copies 0 = one plan on the whole OpenMP team; n > 0 = n single-threaded copies
  // of one plan, one per thread of an image-parallel batch.
  using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t>;
  // Whether a batch of this size runs image-parallel (BatchThreading::images) on `threads` threads.
  bool splits_images(int64_t batch, int64_t threads) const;
  // The chunks (first image, images) an image-parallel batch is cut into, in the order the threads take them.
  static std::vector<std::pair<int64_t, int64_t>> image_chunks(int64_t batch, int64_t threads);
  std::vector<std::unique_ptr<Plan>>& plans_for(const PlanKey& key);
  Plan& plan_for(int64_t batch, int64_t height, int64_t width);
  void run_images(int64_t batch, int64_t height, int64_t width, const std::vector<InputPart>& parts, float* logits);

  ProgramSpec spec_;
  // Touched only on the compute thread (see on_compute_thread).
  // Most recently used plans by PlanKey; at most kMaxPlans keys are kept. 8 holds a server's prepared batch sizes
  // (powers of two up to 64) plus one other shape: with fewer, a server's batches of mixed sizes evicted each other
  // and every batch recompiled (and re-measured) its plan.
  std::map<PlanKey, std::vector<std::unique_ptr<Plan>>> plans_;
  std::vector<PlanKey> plan_order_;
  static constexpr size_t kMaxPlans = 8;
  WinogradWeightCache winograd_weights_;
  ReorderedWeightCache reordered_weights_;
};

}  // namespace repvgg::cpu
