// Compiles a ProgramSpec into oneDNN primitives for one input shape and runs it (see program.h).
// Activation layouts are chosen by the primitives ("any": channels-last for oneDNN's brgemm kernels on AVX-512), so
// convs run with no reorders between layers, except on CPUs where oneDNN blocks channels (AVX2): there the convs
// our Winograd kernel may run take NHWC and the others the blocked layout, with a reorder where they meet
// (compile_conv). Weights are reordered once per plan into the layout each primitive wants. A 3x3 stride-1 conv may
// instead run our Winograd kernel (winograd.h), chosen per layer by measuring.
#include "program.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <cstdlib>
#include <optional>
#include <cstring>
#include <unordered_map>

#include "dnnl_common.h"
#include "gemm_conv.h"
#include "small_input_conv.h"
#include "winograd.h"

namespace repvgg::cpu {

namespace {

using memory = dnnl::memory;
using md_t = dnnl::memory::desc;

// Every primitive of a plan is created in user scratchpad mode and takes its scratch from its plan: the per-thread
// copies of an image-parallel plan run at the same time, and oneDNN's library-managed scratchpad may be shared by
// primitives (when it was built without DNNL_ENABLE_CONCURRENT_EXEC).
dnnl::primitive_attr user_scratchpad(dnnl::primitive_attr attr = dnnl::primitive_attr()) {
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The scratchpad a primitive created with user_scratchpad needs; a zero md when it needs none.
md_t scratchpad_md(const dnnl::primitive& prim) {
  const dnnl_memory_desc_t* md = dnnl_primitive_desc_query_md(prim.get_primitive_desc(), dnnl_query_scratchpad_md, 0);
  return md == nullptr ? md_t() : md_t(*md);
}

// A primitive's arguments plus a scratchpad of its own (for the rarely run reorders outside a plan's step list).
std::unordered_map<int, memory> with_own_scratchpad(const dnnl::primitive& prim, std::unordered_map<int, memory> args) {
  const md_t md = scratchpad_md(prim);
  if (md.get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, memory(md, engine()));
  return args;
}

// The first layer's kernel, as plan reports name it.
constexpr const char* kSmallInputImplementation = "own direct:avx512 (few input channels)";

// A primitive bound to activation buffers (by index) and to memories it owns (weights, scratch); or, for a conv that
// runs our Winograd kernel, that kernel on the buffers bound to DNNL_ARG_SRC and DNNL_ARG_DST.
struct Exec {
  dnnl::primitive prim;
  std::shared_ptr<WinogradConv> winograd;
  std::shared_ptr<Im2colConv> im2col;            // im2col + GEMM on shared_weights (HWIO) instead of prim
  std::shared_ptr<SmallInputConv> small_input;   // the first layer's own kernel (small_input_conv.h) instead of prim
  std::shared_ptr<const memory> shared_weights;  // weights from the ReorderedWeightCache, also in fixed_args
  struct BufferArg {
    int arg, buffer;
    md_t md;
  };
  std::vector<BufferArg> buffer_args;
  std::unordered_map<int, memory> fixed_args;
  std::unordered_map<int, memory> args;  // buffer_args + fixed_args, bound after buffers are allocated
  int conv_step = -1;                    // index into the spec's steps when this exec is a conv
  int step = -1;                         // the step (or the head, steps.size()) this exec belongs to
  std::string what;                      // for profiles: "conv", "quantize", "add", ...
};

using AlignedBytes = std::unique_ptr<uint8_t, decltype(&std::free)>;

// bytes (rounded up to whole cache lines) at a 64-byte boundary; what names the buffer if memory runs out.
AlignedBytes allocate_aligned(size_t bytes, const char* what) {
  bytes = (bytes + 63) / 64 * 64;
  AlignedBytes data(static_cast<uint8_t*>(std::aligned_alloc(64, bytes)), &std::free);
  RV_CHECK(data != nullptr, "ERR_BACKEND", "out of memory allocating " + std::to_string(bytes) + " bytes of " + what);
  return data;
}

double time_ms(const std::function<void()>& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Whether md is dense channels-last float32 or bfloat16 (what the Winograd kernel reads and writes).
bool is_nhwc_float(const md_t& md) {
  const dt type = md.data_type();
  return (type == dt::f32 || type == dt::bf16) && md.dims().size() == 4 && md == md_t(md.dims(), type, tag::nhwc);
}

std::string layout_name(const md_t& md) {
  if (md == md_t(md.dims(), md.data_type(), tag::nhwc)) return "NHWC";
  if (md == md_t(md.dims(), md.data_type(), tag::nchw)) return "NCHW";
  return "blocked";
}

dnnl::primitive_attr relu_attr(bool relu, dnnl::algorithm alg = dnnl::algorithm::eltwise_relu) {
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, alg, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// oneDNN's weight dims of a conv step: (O, C, K, K), or (G, O/G, C/G, K, K) when grouped.
dims conv_weight_dims(const ConvStepSpec& c) {
  return c.groups == 1 ? dims{c.out_channels, c.in_channels, c.kernel, c.kernel}
                       : dims{c.groups, c.out_channels / c.groups, c.in_channels / c.groups, c.kernel, c.kernel};
}

// A memory over caller-owned float data (the spec's vectors live as long as the Program).
memory wrap(const dims& shape, const std::vector<float>& data) {
  return memory(plain_f32(shape), engine(), const_cast<float*>(data.data()));
}

// Step `step`'s plain float32 weights (w_dims; a conv's, or the classifier's as the step after the last) in layout md:
// from the cache when a plan already reordered them so, else reordered now and cached.
std::shared_ptr<const memory> reordered_weights(ReorderedWeightCache& cache, int step, const dims& w_dims, const std::vector<float>& weight,
                                                const md_t& md) {
  std::vector<ReorderedWeights>& entries = cache[step];
  for (auto it = entries.begin(); it != entries.end();) {
    std::shared_ptr<const memory> cached = it->weights.lock();
    if (!cached) {
      it = entries.erase(it);
      continue;
    }
    if (it->md == md) return cached;
    ++it;
  }
  memory user_w(plain_f32(w_dims), engine(), const_cast<float*>(weight.data()));
  memory weights(md, engine());
  dnnl::reorder(user_w, weights).execute(stream(), user_w, weights);
  stream().wait();
  auto shared = std::make_shared<const memory>(weights);
  entries.push_back({md, shared});
  return shared;
}

// Mean over H and W of buffer (layout x_md) into pooled (n, c, 1, 1) plain float32. fp32: an average pooling whose
// window is the whole map (oneDNN's jit kernels; its reduction primitive ran the reference implementation on these
// layouts, 0.48 ms of RepVGG-A0's ~9 ms at batch 1), then a reorder into the plain layout when the pooling keeps a
// blocked one. bf16: the reduction, which writes float32 means directly (pooling would round them to bf16 first).
// A 1x1 map needs no pooling, only that reorder.
std::vector<Exec> global_mean_execs(const md_t& x_md, int buffer, const memory& pooled) {
  const dims& d = x_md.dims();
  if (d[2] * d[3] == 1) {
    Exec copy;
    copy.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), x_md, engine(), pooled.get_desc(), user_scratchpad()));
    copy.buffer_args.push_back({DNNL_ARG_FROM, buffer, x_md});
    copy.fixed_args.emplace(DNNL_ARG_TO, pooled);
    return {copy};
  }
  if (x_md.data_type() != dt::f32) {
    Exec mean;
    mean.prim = dnnl::reduction(dnnl::reduction::primitive_desc(
        dnnl::reduction::desc(dnnl::algorithm::reduction_mean, x_md, pooled.get_desc(), 0.f, 0.f), user_scratchpad(), engine()));
    mean.buffer_args.push_back({DNNL_ARG_SRC, buffer, x_md});
    mean.fixed_args.emplace(DNNL_ARG_DST, pooled);
    return {mean};
  }
  const md_t any_dst({d[0], d[1], 1, 1}, dt::f32, tag::any);
  const dnnl::pooling_forward::primitive_desc pd(
      dnnl::pooling_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_avg_exclude_padding, x_md, any_dst,
                                  {d[2], d[3]} /* strides */, {d[2], d[3]} /* kernel */, {0, 0}, {0, 0}),
      user_scratchpad(), engine());
  Exec pool;
  pool.prim = dnnl::pooling_forward(pd);
  pool.buffer_args.push_back({DNNL_ARG_SRC, buffer, x_md});
  if (pd.dst_desc() == pooled.get_desc()) {
    pool.fixed_args.emplace(DNNL_ARG_DST, pooled);
    return {pool};
  }
  memory staged(pd.dst_desc(), engine());  // (n, c, 1, 1) in the pooling's layout
  pool.fixed_args.emplace(DNNL_ARG_DST, staged);
  Exec to_plain;
  to_plain.prim = dnnl::reorder(dnnl::reorder::primitive_desc(staged, pooled, user_scratchpad()));
  to_plain.fixed_args = {{DNNL_ARG_FROM, staged}, {DNNL_ARG_TO, pooled}};
  return {pool, to_plain};
}

}  // namespace

class Plan {
 public:
  // follow: another plan's report whose conv algorithms this plan takes instead of choosing its own (the per-thread
  // copies of an image-parallel plan compute alike), or null.
  Plan(const ProgramSpec& spec, int64_t batch, int64_t height, int64_t width, WinogradWeightCache& winograd_weights,
       ReorderedWeightCache& reordered_weights, const PlanReport* follow);
  void run(const float* input, float* logits);
  void run_parts(const std::vector<InputPart>& parts, float* logits);
  Profile profile(int runs);
  PlanReport& report() { return report_; }

 private:
  void compile_conv(int index, const ConvStepSpec& c);
  void compile_conv_int8(int index, const ConvStepSpec& c, int64_t oh, int64_t ow);
  bool runs_small_input_conv(const ConvStepSpec& c) const;
  void compile_small_input_conv(int index, const ConvStepSpec& c, int64_t oh, int64_t ow);
  bool quantize_in_small_input_conv(int index, const ConvStepSpec& c, const md_t& u8_src);
  bool read_only_by(int buffer, int step) const;
  void require_float(int buffer, const std::string& what) const;
  // Records what a step left in buffer: its layout and (channels, height, width).
  void set_buffer(int buffer, const md_t& md, int64_t channels, int64_t height, int64_t width);
  void compile_batchnorm(const BatchNormStepSpec& b);
  void compile_add(const AddStepSpec& a);
  void compile_se(const SeStepSpec& s);
  void compile_head();
  void allocate_and_bind();
  void allocate_winograd_scratch();
  void measure_conv_choices();
  void execute(Exec& exec);
  const md_t& buffer_md(int buffer, const char* what) const;

  const ProgramSpec& spec_;
  int64_t batch_;
  WinogradWeightCache& winograd_weights_;
  ReorderedWeightCache& reordered_weights_;
  const PlanReport* follow_;  // only while compiling
  dt act_type_;
  dnnl::stream stream_;  // its own: the copies of an image-parallel plan run at the same time
  // The user scratchpad of every primitive in execs_, one at a time (oneDNN's are small: 32 KiB for RepVGG-A0; not in
  // the report's workspace_bytes).
  AlignedBytes scratchpad_{nullptr, &std::free};
  std::vector<md_t> buffer_mds_;  // current layout of each buffer while compiling; empty md = not yet written
  std::vector<int64_t> buffer_channels_, buffer_height_, buffer_width_;
  std::vector<AlignedBytes> buffers_;
  std::vector<size_t> buffer_bytes_;
  std::vector<Exec> execs_;
  // The Winograd alternatives of convs whose algorithm 'auto' decides by measuring, by exec index.
  struct WinogradCandidates {
    std::shared_ptr<WinogradConv> f2x2, f4x4;
    std::array<int64_t, 5> shape;  // in and out channels, height, width, pad: convs alike get one algorithm
  };
  std::unordered_map<size_t, WinogradCandidates> winograd_candidates_;
  // Scratch of the Winograd convs (run one after the other, so they share it); null when none runs.
  AlignedBytes winograd_input_{nullptr, &std::free}, winograd_products_{nullptr, &std::free};
  md_t input_md_;  // layout of the input in buffer 0, chosen by its first reader
  // Float32 convs choose their layout one by one: Winograd's on NHWC, the rest on oneDNN's blocked layout, with a
  // reorder between them (see compile_conv); set at the first conv on CPUs where oneDNN blocks activations (AVX2).
  bool mixed_layouts_ = false;
  // One buffer past the spec's, into which a reorder puts a conv's input when the conv reads another layout than
  // its input buffer holds; sized for the largest such input (empty when none).
  int relayout_buffer_;
  memory input_user_, logits_user_;
  dnnl::primitive input_reorder_;
  std::unordered_map<int, memory> input_reorder_args_;  // input_user_ -> input_buffer_mem_, and a scratchpad if needed
  memory input_buffer_mem_;
  // run_parts(): per part size (images), a reorder from NCHW float32 into that many images of the input buffer, and
  // its two memories (the destination's handle set to the part's first image at each run).
  struct PartReorder {
    dnnl::reorder reorder;
    memory from, to;
    std::unordered_map<int, memory> args;  // from, to and the reorder's own scratchpad, if any
  };
  std::map<int64_t, PartReorder> part_reorders_;
  PlanReport report_;
};

const md_t& Plan::buffer_md(int buffer, const char* what) const {
  RV_CHECK(buffer >= 0 && buffer < static_cast<int>(buffer_mds_.size()), "ERR_ARG_VALUE",
           std::string(what) + " refers to buffer " + std::to_string(buffer) + " of " + std::to_string(buffer_mds_.size()));
  RV_CHECK(!buffer_mds_[buffer].is_zero(), "ERR_ARG_VALUE",
           std::string(what) + " reads buffer " + std::to_string(buffer) + " before anything wrote it");
  return buffer_mds_[buffer];
}

Plan::Plan(const ProgramSpec& spec, int64_t batch, int64_t height, int64_t width, WinogradWeightCache& winograd_weights,
           ReorderedWeightCache& reordered_weights, const PlanReport* follow)
    : spec_(spec),
      batch_(batch),
      winograd_weights_(winograd_weights),
      reordered_weights_(reordered_weights),
      follow_(follow),
      act_type_(spec.precision == Precision::bf16 ? dt::bf16 : dt::f32),
      stream_(engine()),
      relayout_buffer_(spec.num_buffers) {
  buffer_mds_.resize(spec.num_buffers);
  buffer_channels_.assign(spec.num_buffers, 0);
  buffer_height_.assign(spec.num_buffers, 0);
  buffer_width_.assign(spec.num_buffers, 0);
  buffer_channels_[0] = spec.in_channels;
  buffer_height_[0] = height;
  buffer_width_[0] = width;
  report_.batch = batch;
  report_.height = height;
  report_.width = width;
  wrap_dnnl("compiling network", [&] {
    auto label_new_execs = [&](size_t first, int step, const char* what) {
      for (size_t e = first; e < execs_.size(); e++) {
        execs_[e].step = step;
        if (execs_[e].what.empty()) execs_[e].what = what;
      }
    };
    for (size_t i = 0; i < spec.steps.size(); i++) {
      const StepSpec& step = spec.steps[i];
      const size_t first = execs_.size();
      switch (step.kind) {
        case StepKind::conv: compile_conv(static_cast<int>(i), step.conv); break;
        case StepKind::batchnorm: compile_batchnorm(step.bn); break;
        case StepKind::add: compile_add(step.add); break;
        case StepKind::se: compile_se(step.se); break;
      }
      static const char* kinds[] = {"conv", "batchnorm", "add", "se"};
      label_new_execs(first, static_cast<int>(i), kinds[static_cast<int>(step.kind)]);
    }
    const size_t head_first = execs_.size();
    compile_head();
    label_new_execs(head_first, static_cast<int>(spec.steps.size()), "classifier");
    allocate_and_bind();
    if (!winograd_candidates_.empty()) measure_conv_choices();
  });
  follow_ = nullptr;
}

void Plan::set_buffer(int buffer, const md_t& md, int64_t channels, int64_t height, int64_t width) {
  buffer_mds_[buffer] = md;
  buffer_channels_[buffer] = channels;
  buffer_height_[buffer] = height;
  buffer_width_[buffer] = width;
}

// Steps other than int8 convs read float activations: an int8 conv that feeds them must output float32.
void Plan::require_float(int buffer, const std::string& what) const {
  RV_CHECK(buffer_mds_[buffer].is_zero() || buffer_mds_[buffer].data_type() != dt::u8, "ERR_ARG_VALUE",
           what + " reads the int8 activations of buffer " + std::to_string(buffer) + ": the int8 conv before it must output float32 (outputScale 0)");
}

void Plan::compile_conv(int index, const ConvStepSpec& c) {
  RV_CHECK(buffer_channels_[c.src] == c.in_channels, "ERR_SHAPE",
           "conv step " + std::to_string(index) + " expects " + std::to_string(c.in_channels) + " input channels but its buffer holds " +
               std::to_string(buffer_channels_[c.src]));
  const int64_t h = buffer_height_[c.src], w = buffer_width_[c.src];
  const int64_t oh = (h + 2 * c.pad - c.kernel) / c.stride + 1, ow = (w + 2 * c.pad - c.kernel) / c.stride + 1;
  RV_CHECK(oh >= 1 && ow >= 1, "ERR_SHAPE", "input " + std::to_string(h) + "x" + std::to_string(w) + " too small for conv step " + std::to_string(index));
  if (c.int8) return compile_conv_int8(index, c, oh, ow);
  require_float(c.src, "conv step " + std::to_string(index));
  if (runs_small_input_conv(c)) return compile_small_input_conv(index, c, oh, ow);
  const bool src_known = !buffer_mds_[c.src].is_zero();
  const md_t src_md = src_known ? buffer_mds_[c.src] : md_t({batch_, c.in_channels, h, w}, act_type_, tag::any);
  const dims w_dims = conv_weight_dims(c);
  const md_t w_any(w_dims, act_type_, tag::any);
  const md_t bias_md = c.bias.empty() ? md_t() : plain_f32({c.out_channels});
  // bf16: the last conv writes float32 for the head, whose global mean then runs oneDNN's jit pooling (the bf16
  // reduction ran its reference code: 0.9 ms of A0's 6.2 ms at batch 1) and keeps the features unrounded.
  const bool feeds_head = index + 1 == static_cast<int>(spec_.steps.size()) && c.dst == spec_.head_src;
  const md_t dst_any({batch_, c.out_channels, oh, ow}, feeds_head ? dt::f32 : act_type_, tag::any);
  const dims strides{c.stride, c.stride}, pads{c.pad, c.pad};
  const dnnl::primitive_attr attr = user_scratchpad(relu_attr(c.relu));

  auto make_pd = [&](const md_t& src, const md_t& dst) {
    return dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, w_any, bias_md,
                                        dst, strides, pads, pads),
        attr, engine());
  };
  // Where oneDNN keeps activations channel-blocked (AVX2: nChw8c; AVX-512 chooses NHWC itself), our Winograd
  // kernels, NHWC only, could never run on them. There float32 plans that may choose Winograd mix layouts: the convs
  // that may run it read and write NHWC, every other conv oneDNN's blocked layout, and a reorder brings a conv's input
  // into its layout where the previous conv wrote the other one (src, dst in one layout each: oneDNN runs its
  // reference code on a mix). oneDNN's AVX2 direct kernels are much slower on NHWC at stride 2 (A0 at 224 on a Zen 3,
  // one thread, 4 images: 48 -> 48 from 112x112 17.8 vs 7.6 ms; 192 -> 1280 from 14x14, 1 image, 4.9 vs 3.5 ms),
  // while a reorder of such an activation costs ~0.1 ms. A conv with fewer than kWinogradLayoutMinChannels input or
  // output channels keeps the blocked layout unless Winograd is forced: the direct kernel on it beats our Winograd
  // there (A0's 48 channels at 56x56: 1.8 vs 2.6 ms at batch 1 on one thread, 8.2 vs 9.5 ms for 4 images).
  // A 1x1 conv keeps the layout it finds (the training-time form's branches, added to the 3x3 conv's output).
  constexpr int64_t kWinogradLayoutMinChannels = 64;
  const bool may_run_winograd = spec_.precision == Precision::fp32 && spec_.conv_algorithm != ConvAlgorithm::direct;
  std::optional<dnnl::convolution_forward::primitive_desc> any_pd;
  if (!mixed_layouts_) {
    any_pd = make_pd(src_md, dst_any);
    mixed_layouts_ = may_run_winograd && !src_known && !is_nhwc_float(any_pd->dst_desc());
  }
  // Winograd reads neighbouring tiles while writing, so never in place; and not on the network input (3 channels:
  // the transforms would be most of the work).
  const bool winograd_geometry = c.kernel == 3 && c.stride == 1 && c.groups == 1 && c.pad <= 1 && c.src != c.dst && src_known;
  const bool forced_winograd = spec_.conv_algorithm == ConvAlgorithm::winograd || spec_.conv_algorithm == ConvAlgorithm::winograd2x2;
  // im2col + GEMM (gemm_conv.h) for the wide stride-2 convs of plans that run on all threads, where oneDNN keeps
  // activations blocked (AVX2 and below: mixed_layouts_) and the conv algorithm is not forced. On a 2-core Zen 3,
  // two threads, oneDNN 2.6's AVX2 direct kernel ran RepVGG-A0's last-stage conv (192 -> 1280 channels from 14x14
  // to 7x7) at ~70 GFLOP/s, one sgemm at ~120: 3.1 -> 2.4 ms at batch 1 with the head, 12.4 -> 10.2 for 4 images;
  // whole forwards (interleaved, medians of 15 rounds, within this machine's noise): A0 1.01-1.08x at batch 1,
  // 0.97-1.07x at 4, B0 1.09x at 1, 0.95-1.04x at 4. The single-threaded plans of image-parallel batches (run two at
  // a time) gained nothing there (0.94-1.03x at batch 2, 8 and 32), so they stay direct, as do
  // narrower stride-2 convs: A0's 48 -> 48 from 112x112 and 48 -> 96 from 56x56 were slower as im2col (8.8 vs 6.2
  // ms, 3.7 vs 3.2 ms for 4 images), 96 -> 192 from 28x28 tied.
  constexpr int64_t kIm2colMinOutChannels = 512;
  const bool im2col_geometry = mixed_layouts_ && spec_.precision == Precision::fp32 && spec_.conv_algorithm == ConvAlgorithm::auto_measure &&
                               omp_get_max_threads() > 1 && c.kernel == 3 && c.stride == 2 && c.groups == 1 &&
                               c.out_channels >= kIm2colMinOutChannels && c.src != c.dst && src_known &&
                               oh * ow * c.kernel * c.kernel * c.in_channels <= kMaxIm2colImageElements;
  const md_t held = src_md;
  std::optional<dnnl::convolution_forward::primitive_desc> pd;
  if (!mixed_layouts_) {
    pd = *any_pd;
  } else {
    const bool nhwc = (winograd_geometry && (forced_winograd || std::min(c.in_channels, c.out_channels) >= kWinogradLayoutMinChannels)) ||
                      (c.kernel == 1 && src_known && is_nhwc_float(held)) || im2col_geometry;
    const md_t any_src(src_md.dims(), act_type_, tag::any);
    pd = nhwc ? make_pd(md_t(src_md.dims(), act_type_, tag::nhwc), md_t(dst_any.dims(), dst_any.data_type(), tag::nhwc))
         : src_known ? make_pd(any_src, dst_any)
                     : *any_pd;
  }
  const md_t chosen_src = pd->src_desc();
  // The buffer the conv reads: its input's, or the relayout buffer after a reorder into the conv's layout.
  int read_buffer = c.src;
  if (src_known && chosen_src != held) {
    Exec reorder;
    reorder.what = "reorder";
    reorder.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), held, engine(), chosen_src, user_scratchpad()));
    reorder.buffer_args.push_back({DNNL_ARG_FROM, c.src, held});
    reorder.buffer_args.push_back({DNNL_ARG_TO, relayout_buffer_, chosen_src});
    execs_.push_back(std::move(reorder));
    read_buffer = relayout_buffer_;
  }
  const bool winograd_shape = winograd_geometry && is_nhwc_float(chosen_src) && is_nhwc_float(pd->dst_desc());
  // bf16 runs F(2x2) only (winograd.h).
  const bool f4x4_allowed = act_type_ == dt::f32;
  ConvAlgorithm algorithm = spec_.conv_algorithm;
  if (follow_ != nullptr) {
    const auto followed = std::find_if(follow_->convs.begin(), follow_->convs.end(), [&](const ConvChoice& choice) { return choice.step == index; });
    RV_CHECK(followed != follow_->convs.end(), "ERR_BACKEND", "conv step " + std::to_string(index) + " is missing from the plan to follow");
    algorithm = followed->algorithm == "winograd"      ? ConvAlgorithm::winograd
                : followed->algorithm == "winograd2x2" ? ConvAlgorithm::winograd2x2
                                                       : ConvAlgorithm::direct;
  }
  auto make_winograd = [&](WinogradTile tile) -> std::shared_ptr<WinogradConv> {
    std::weak_ptr<const dnnl::memory>& cached = winograd_weights_[{index, static_cast<int>(tile)}];
    WinogradWeights weights = cached.lock();
    if (!weights) cached = weights = transform_winograd_weights(tile, c.weight.data(), c.in_channels, c.out_channels, act_type_);
    const WinogradShape shape{batch_, c.in_channels, c.out_channels, h, w, c.pad, chosen_src.data_type(), pd->dst_desc().data_type()};
    return std::make_shared<WinogradConv>(shape, tile, weights, c.bias, c.relu);
  };
  WinogradCandidates candidates;
  candidates.shape = {c.in_channels, c.out_channels, h, w, c.pad};
  if (winograd_shape && (algorithm == ConvAlgorithm::auto_measure || algorithm == ConvAlgorithm::winograd2x2))
    candidates.f2x2 = make_winograd(WinogradTile::f2x2);
  if (winograd_shape && f4x4_allowed && (algorithm == ConvAlgorithm::auto_measure || algorithm == ConvAlgorithm::winograd))
    candidates.f4x4 = make_winograd(WinogradTile::f4x4);
  const std::shared_ptr<WinogradConv> forced = algorithm == ConvAlgorithm::winograd2x2 ? candidates.f2x2
                                               : algorithm == ConvAlgorithm::winograd  ? candidates.f4x4
                                                                                       : nullptr;

  Exec exec;
  exec.conv_step = index;
  exec.buffer_args.push_back({DNNL_ARG_SRC, read_buffer, chosen_src});
  exec.buffer_args.push_back({DNNL_ARG_DST, c.dst, pd->dst_desc()});
  if (forced) {
    exec.winograd = forced;
    report_.convs.push_back({index, algorithm == ConvAlgorithm::winograd ? "winograd" : "winograd2x2", forced->implementation(), -1, -1, -1, layout_name(pd->dst_desc())});
  } else if (im2col_geometry) {
    exec.shared_weights = reordered_weights(reordered_weights_, index, w_dims, c.weight, md_t(w_dims, dt::f32, tag::hwio));
    exec.im2col = std::make_shared<Im2colConv>(Im2colConv::Shape{batch_, c.in_channels, h, w, c.out_channels, c.kernel, c.stride, c.pad},
                                               static_cast<const float*>(exec.shared_weights->get_data_handle()), c.bias, c.relu);
    report_.convs.push_back({index, "im2col", "im2col + sgemm", -1, -1, -1, layout_name(pd->dst_desc())});
  } else {
    // The plain float32 weights in the layout (and type) the primitive wants, reordered once per layout.
    exec.shared_weights = reordered_weights(reordered_weights_, index, w_dims, c.weight, pd->weights_desc());
    exec.prim = dnnl::convolution_forward(*pd);
    exec.fixed_args.emplace(DNNL_ARG_WEIGHTS, *exec.shared_weights);
    if (!c.bias.empty()) exec.fixed_args.emplace(DNNL_ARG_BIAS, wrap({c.out_channels}, c.bias));
    report_.convs.push_back({index, "direct", pd->impl_info_str(), -1, -1, -1, layout_name(pd->dst_desc())});
    if (algorithm == ConvAlgorithm::auto_measure && winograd_shape) winograd_candidates_.emplace(execs_.size(), candidates);
  }
  execs_.push_back(std::move(exec));

  if (!src_known) buffer_mds_[c.src] = input_md_ = chosen_src;
  if (report_.layout.empty()) report_.layout = layout_name(pd->dst_desc());
  set_buffer(c.dst, pd->dst_desc(), c.out_channels, oh, ow);
}

// u8 activations (x = input_scale * q) times s8 weights (w = weight_scales[oc] * q) accumulate exactly in s32; oneDNN
// 2.6 adds the bias to that sum and then multiplies by the per-channel output scale, so the bias goes in in
// accumulator units, b / (input_scale * weight_scales[oc]), and the output scale is input_scale * weight_scales[oc] /
// output_scale for a u8 output (rounded to nearest, saturated) or input_scale * weight_scales[oc] for float32. A
// float32 input is quantized first by a reorder (scale 1 / input_scale) into memory of this step's own.
void Plan::compile_conv_int8(int index, const ConvStepSpec& c, int64_t oh, int64_t ow) {
  const int64_t h = buffer_height_[c.src], w = buffer_width_[c.src];
  RV_CHECK(!buffer_mds_[c.src].is_zero(), "ERR_ARG_VALUE",
           "int8 conv step " + std::to_string(index) + " reads the network input: its first layer must run in float32");
  const md_t held = buffer_mds_[c.src];
  const bool quantize_input = held.data_type() != dt::u8;
  const md_t src_md = quantize_input ? md_t({batch_, c.in_channels, h, w}, dt::u8, tag::any) : held;
  const dims w_dims = conv_weight_dims(c);
  const bool u8_out = c.output_scale > 0;
  const md_t dst_any({batch_, c.out_channels, oh, ow}, u8_out ? dt::u8 : dt::f32, tag::any);
  std::vector<float> output_scales(c.out_channels);
  memory bias(plain_f32({c.out_channels}), engine());
  auto* bias_acc = static_cast<float*>(bias.get_data_handle());
  for (int64_t oc = 0; oc < c.out_channels; oc++) {
    const double acc_scale = static_cast<double>(c.input_scale) * c.weight_scales[oc];
    output_scales[oc] = static_cast<float>(u8_out ? acc_scale / c.output_scale : acc_scale);
    bias_acc[oc] = c.bias.empty() ? 0.f : static_cast<float>(c.bias[oc] / acc_scale);
    // Each scale is checked positive and finite, but their products and quotients can still leave float32.
    RV_CHECK(std::isfinite(output_scales[oc]) && output_scales[oc] > 0 && std::isfinite(bias_acc[oc]), "ERR_ARG_VALUE",
             "int8 conv step " + std::to_string(index) + ": the scales of output channel " + std::to_string(oc) +
                 " put its requantization or bias outside float32 (input " + std::to_string(c.input_scale) + ", weight " +
                 std::to_string(c.weight_scales[oc]) + ", output " + std::to_string(c.output_scale) + ")");
  }
  dnnl::primitive_attr attr = user_scratchpad(relu_attr(c.relu));
  attr.set_output_scales(1 << 1 /* per output channel of (n, oc, h, w) */, output_scales);
  const dims strides{c.stride, c.stride}, pads{c.pad, c.pad};
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md,
                                    md_t(w_dims, dt::s8, tag::any), plain_f32({c.out_channels}), dst_any, strides, pads, pads);
  dnnl::convolution_forward::primitive_desc pd(d, attr, engine());

  Exec exec;
  exec.what = "int8 conv";
  exec.shared_weights = reordered_weights(reordered_weights_, index, w_dims, c.weight, pd.weights_desc());  // integers: exact in s8
  exec.prim = dnnl::convolution_forward(pd);
  exec.conv_step = index;
  if (quantize_input && quantize_in_small_input_conv(index, c, pd.src_desc())) {
    exec.buffer_args.push_back({DNNL_ARG_SRC, c.src, pd.src_desc()});
  } else if (quantize_input) {
    memory quantized(pd.src_desc(), engine());
    dnnl::primitive_attr scale_attr = user_scratchpad();
    scale_attr.set_output_scales(0, {1.f / c.input_scale});
    Exec quantize;
    quantize.what = "quantize";
    quantize.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), held, engine(), pd.src_desc(), scale_attr));
    quantize.buffer_args.push_back({DNNL_ARG_FROM, c.src, held});
    quantize.fixed_args.emplace(DNNL_ARG_TO, quantized);
    execs_.push_back(std::move(quantize));
    exec.fixed_args.emplace(DNNL_ARG_SRC, quantized);
  } else {
    RV_CHECK(pd.src_desc() == held, "ERR_BACKEND", "int8 conv step " + std::to_string(index) + " wants its input in another layout");
    exec.buffer_args.push_back({DNNL_ARG_SRC, c.src, held});
  }
  exec.buffer_args.push_back({DNNL_ARG_DST, c.dst, pd.dst_desc()});
  exec.fixed_args.emplace(DNNL_ARG_WEIGHTS, *exec.shared_weights);
  exec.fixed_args.emplace(DNNL_ARG_BIAS, bias);
  report_.convs.push_back({index, "int8", pd.impl_info_str(), -1, -1, -1, layout_name(pd.dst_desc())});
  execs_.push_back(std::move(exec));
  set_buffer(c.dst, pd.dst_desc(), c.out_channels, oh, ow);
}

// Whether conv c runs on our first-layer kernel (small_input_conv.h): in an int8 network (where it also quantizes
// the next layer's input, see quantize_in_small_input_conv) it reads the network input, which has few channels, on
// an AVX-512 CPU, and no other conv has put the input into a layout of oneDNN's. float32 and bf16 networks keep
// oneDNN's conv: there ours only tied (A0 and B0 at batch 1 on a 2-core Zen 5, interleaved whole forwards in one
// process: 0.98-1.04x).
bool Plan::runs_small_input_conv(const ConvStepSpec& c) const {
  const md_t plain_input({batch_, c.in_channels, buffer_height_[0], buffer_width_[0]}, dt::f32, tag::nchw);
  return spec_.precision == Precision::int8 && c.src == 0 && c.dst != 0 && c.groups == 1 && c.in_channels <= SmallInputConv::kMaxInChannels && c.pad < c.kernel &&
         SmallInputConv::available() && (buffer_mds_[0].is_zero() || buffer_mds_[0] == plain_input);
}

// The first layer on the plain float32 input, NCHW as the caller gives it (the input "reorder" is then a copy); its
// output float32 channels-last, until an int8 conv that reads it has it write u8.
void Plan::compile_small_input_conv(int index, const ConvStepSpec& c, int64_t oh, int64_t ow) {
  const int64_t h = buffer_height_[0], w = buffer_width_[0];
  const md_t input_md({batch_, c.in_channels, h, w}, dt::f32, tag::nchw);
  if (buffer_mds_[0].is_zero()) buffer_mds_[0] = input_md_ = input_md;
  const md_t dst_md({batch_, c.out_channels, oh, ow}, dt::f32, tag::nhwc);
  Exec exec;
  exec.conv_step = index;
  exec.small_input = std::make_shared<SmallInputConv>(SmallInputConvShape{batch_, c.in_channels, h, w, c.out_channels, c.kernel, c.stride, c.pad},
                                                      c.weight, c.bias, c.relu, SmallInputOutput::f32, 0.f);
  exec.buffer_args.push_back({DNNL_ARG_SRC, 0, input_md});
  exec.buffer_args.push_back({DNNL_ARG_DST, c.dst, dst_md});
  report_.convs.push_back({index, "direct", kSmallInputImplementation, -1, -1, -1, "NHWC"});
  execs_.push_back(std::move(exec));
  if (report_.layout.empty()) report_.layout = "NHWC";
  set_buffer(c.dst, dst_md, c.out_channels, oh, ow);
}

// An int8 conv (step `index`) whose float32 input the first layer's kernel has just written, into a buffer nothing
// else reads: that kernel writes the u8 input (layout u8_src: NHWC) itself, saving a quantizing pass over it (A0:
// 48 x 112 x 112 values). Returns whether it does; the buffer then holds u8.
bool Plan::quantize_in_small_input_conv(int index, const ConvStepSpec& c, const md_t& u8_src) {
  if (execs_.empty() || !execs_.back().small_input || u8_src != md_t(u8_src.dims(), dt::u8, tag::nhwc)) return false;
  Exec& first = execs_.back();
  auto dst = std::find_if(first.buffer_args.begin(), first.buffer_args.end(), [](const Exec::BufferArg& a) { return a.arg == DNNL_ARG_DST; });
  if (dst->buffer != c.src || !read_only_by(c.src, index)) return false;
  const ConvStepSpec& layer = spec_.steps[first.conv_step].conv;
  first.small_input = std::make_shared<SmallInputConv>(first.small_input->shape(), layer.weight, layer.bias, layer.relu, SmallInputOutput::u8,
                                                       c.input_scale);
  dst->md = u8_src;
  set_buffer(c.src, u8_src, buffer_channels_[c.src], buffer_height_[c.src], buffer_width_[c.src]);
  for (ConvChoice& choice : report_.convs)
    if (choice.step == first.conv_step) choice.implementation = std::string(kSmallInputImplementation) + ", u8 out";
  return true;
}

// Whether, after step `step` reads it, nothing reads buffer before something writes it (the head reads head_src).
bool Plan::read_only_by(int buffer, int step) const {
  for (size_t i = static_cast<size_t>(step); i < spec_.steps.size(); i++) {
    const StepSpec& s = spec_.steps[i];
    const bool later = i > static_cast<size_t>(step);
    switch (s.kind) {
      case StepKind::conv:
        if (later && s.conv.src == buffer) return false;
        if (s.conv.dst == buffer) return true;
        break;
      case StepKind::batchnorm:
        if (later && s.bn.src == buffer) return false;
        if (s.bn.dst == buffer) return true;
        break;
      case StepKind::add:
        if (later && (s.add.a == buffer || s.add.b == buffer)) return false;
        if (s.add.dst == buffer) return true;
        break;
      case StepKind::se:
        if (later && s.se.buf == buffer) return false;
        break;
    }
  }
  return buffer != spec_.head_src;
}

void Plan::compile_batchnorm(const BatchNormStepSpec& b) {
  require_float(b.src, "batch norm");
  const md_t src_md = buffer_md(b.src, "batch norm");
  RV_CHECK(buffer_channels_[b.src] == b.channels, "ERR_SHAPE", "batch norm over " + std::to_string(b.channels) + " channels reads a buffer of " + std::to_string(buffer_channels_[b.src]));
  auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_inference, src_md, b.eps, flags);
  dnnl::batch_normalization_forward::primitive_desc pd(d, user_scratchpad(), engine());
  Exec exec;
  exec.prim = dnnl::batch_normalization_forward(pd);
  exec.buffer_args.push_back({DNNL_ARG_SRC, b.src, src_md});
  exec.buffer_args.push_back({DNNL_ARG_DST, b.dst, pd.dst_desc()});
  exec.fixed_args.emplace(DNNL_ARG_MEAN, wrap({b.channels}, b.mean));
  exec.fixed_args.emplace(DNNL_ARG_VARIANCE, wrap({b.channels}, b.var));
  exec.fixed_args.emplace(DNNL_ARG_SCALE, wrap({b.channels}, b.gamma));
  exec.fixed_args.emplace(DNNL_ARG_SHIFT, wrap({b.channels}, b.beta));
  execs_.push_back(std::move(exec));
  set_buffer(b.dst, pd.dst_desc(), b.channels, buffer_height_[b.src], buffer_width_[b.src]);
}

void Plan::compile_add(const AddStepSpec& a) {
  require_float(a.a, "add");
  require_float(a.b, "add");
  const md_t a_md = buffer_md(a.a, "add");
  const md_t b_md = buffer_md(a.b, "add");
  RV_CHECK(a_md.dims() == b_md.dims(), "ERR_SHAPE", "add of buffers with different shapes");
  memory b_reordered;
  if (!(a_md == b_md)) {  // bring b into a's layout first
    b_reordered = memory(a_md, engine());
    Exec reorder;
    reorder.what = "reorder";
    reorder.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), b_md, engine(), a_md, user_scratchpad()));
    reorder.buffer_args.push_back({DNNL_ARG_FROM, a.b, b_md});
    reorder.fixed_args.emplace(DNNL_ARG_TO, b_reordered);
    execs_.push_back(std::move(reorder));
  }
  dnnl::binary::desc d(dnnl::algorithm::binary_add, a_md, a_md, a_md);
  dnnl::binary::primitive_desc pd(d, user_scratchpad(relu_attr(a.relu)), engine());
  Exec exec;
  exec.prim = dnnl::binary(pd);
  exec.buffer_args.push_back({DNNL_ARG_SRC_0, a.a, a_md});
  if (b_reordered) exec.fixed_args.emplace(DNNL_ARG_SRC_1, b_reordered);
  else exec.buffer_args.push_back({DNNL_ARG_SRC_1, a.b, b_md});
  exec.buffer_args.push_back({DNNL_ARG_DST, a.dst, a_md});
  execs_.push_back(std::move(exec));
  set_buffer(a.dst, a_md, buffer_channels_[a.a], buffer_height_[a.a], buffer_width_[a.a]);
}

void Plan::compile_se(const SeStepSpec& s) {
  require_float(s.buf, "squeeze-excitation");
  const md_t x_md = buffer_md(s.buf, "squeeze-excitation");
  const int64_t n = batch_, c = s.channels, r = s.internal;
  RV_CHECK(buffer_channels_[s.buf] == c, "ERR_SHAPE", "squeeze-excitation over " + std::to_string(c) + " channels reads a buffer of " + std::to_string(buffer_channels_[s.buf]));
  // (n, c, 1, 1) pooled means -> (n, r) hidden -> (n, c) gates; small, so plain float32 throughout.
  memory pooled(plain_f32({n, c, 1, 1}), engine());
  memory pooled_2d(plain_f32({n, c}), engine(), pooled.get_data_handle());
  memory hidden(plain_f32({n, r}), engine());
  memory gates(plain_f32({n, c}), engine());
  memory gates_4d(plain_f32({n, c, 1, 1}), engine(), gates.get_data_handle());

  for (Exec& e : global_mean_execs(x_md, s.buf, pooled)) execs_.push_back(std::move(e));

  auto linear = [&](memory src, const std::vector<float>& w, const std::vector<float>& b, int64_t in, int64_t out, memory dst,
                    dnnl::algorithm act) {
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, plain_f32({n, in}), plain_f32({out, in}),
                                        plain_f32({out}), plain_f32({n, out}));
    Exec exec;
    exec.prim = dnnl::inner_product_forward(dnnl::inner_product_forward::primitive_desc(d, user_scratchpad(relu_attr(true, act)), engine()));
    exec.fixed_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wrap({out, in}, w)}, {DNNL_ARG_BIAS, wrap({out}, b)}, {DNNL_ARG_DST, dst}};
    execs_.push_back(std::move(exec));
  };
  linear(pooled_2d, s.down_weight, s.down_bias, c, r, hidden, dnnl::algorithm::eltwise_relu);
  linear(hidden, s.up_weight, s.up_bias, r, c, gates, dnnl::algorithm::eltwise_logistic);

  dnnl::binary::desc d(dnnl::algorithm::binary_mul, x_md, plain_f32({n, c, 1, 1}), x_md);
  Exec scale;
  scale.prim = dnnl::binary(dnnl::binary::primitive_desc(d, user_scratchpad(relu_attr(s.relu)), engine()));
  scale.buffer_args.push_back({DNNL_ARG_SRC_0, s.buf, x_md});
  scale.buffer_args.push_back({DNNL_ARG_DST, s.buf, x_md});
  scale.fixed_args.emplace(DNNL_ARG_SRC_1, gates_4d);
  execs_.push_back(std::move(scale));
}

void Plan::compile_head() {
  require_float(spec_.head_src, "the classifier");
  const md_t x_md = buffer_md(spec_.head_src, "classifier");
  const int64_t n = batch_, c = spec_.features, k = spec_.classes;
  RV_CHECK(buffer_channels_[spec_.head_src] == c, "ERR_SHAPE", "classifier expects " + std::to_string(c) + " features but its buffer holds " + std::to_string(buffer_channels_[spec_.head_src]));
  // bf16 networks run the classifier in bf16 too (its products accumulate and its logits come out in float32): at
  // batch 1 it streams its weights from memory, and bf16 halves them (A0's 1280 -> 1000: 103 -> 37 us with cold
  // weights on 2 threads). The pooled features are rounded to bf16 once, as every conv's input is. int8 networks
  // do the same where the CPU multiplies bf16 natively: bf16's 8 significant bits lose less than the int8 layers
  // before them (A0 with random BN statistics, one image: int8's logits 7.6e-3 of their largest off float32's with
  // a float32 head, 7.3e-3 with a bf16 one), and whole A0 forwards ran 1.03x faster at batch 1 (2-core Zen 5).
  const dt head_type = spec_.precision == Precision::int8 && has_native_bf16() ? dt::bf16 : act_type_;
  memory pooled(md_t({n, c, 1, 1}, head_type, tag::abcd), engine());
  for (Exec& e : global_mean_execs(x_md, spec_.head_src, pooled)) {
    e.what = "global mean";
    execs_.push_back(std::move(e));
  }

  logits_user_ = memory(plain_f32({n, k}), engine(), nullptr);
  const md_t features_md({n, c}, head_type, tag::ab);
  dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, features_md, md_t({k, c}, head_type, head_type == dt::f32 ? tag::ab : tag::any),
                                      plain_f32({k}), plain_f32({n, k}));
  const dnnl::inner_product_forward::primitive_desc pd(d, user_scratchpad(), engine());
  report_.head_precision = head_type == dt::bf16 ? "bf16" : "fp32";
  Exec fc;
  fc.prim = dnnl::inner_product_forward(pd);
  // float32 reads the spec's weights in place; bf16 ones are converted once and shared by every plan of the network.
  if (head_type != dt::f32)
    fc.shared_weights = reordered_weights(reordered_weights_, static_cast<int>(spec_.steps.size()), {k, c}, spec_.head_weight, pd.weights_desc());
  fc.fixed_args = {{DNNL_ARG_SRC, memory(features_md, engine(), pooled.get_data_handle())},
                   {DNNL_ARG_WEIGHTS, fc.shared_weights ? *fc.shared_weights : wrap({k, c}, spec_.head_weight)},
                   {DNNL_ARG_BIAS, wrap({k}, spec_.head_bias)},
                   {DNNL_ARG_DST, logits_user_}};
  execs_.push_back(std::move(fc));
}

void Plan::allocate_and_bind() {
  RV_CHECK(!input_md_.is_zero(), "ERR_ARG_VALUE", "no step reads the input buffer 0");
  const md_t& input_md = input_md_;
  std::vector<size_t> capacity(spec_.num_buffers + 1, 0);  // the spec's buffers and the relayout buffer
  capacity[0] = input_md.get_size();
  for (const Exec& e : execs_)
    for (const auto& a : e.buffer_args) capacity[a.buffer] = std::max(capacity[a.buffer], a.md.get_size());
  for (size_t b = 0; b < capacity.size(); b++) {
    const size_t bytes = (std::max<size_t>(capacity[b], 64) + 63) / 64 * 64;
    buffers_.push_back(allocate_aligned(bytes, "activations"));
    buffer_bytes_.push_back(bytes);
    report_.activation_bytes += static_cast<int64_t>(capacity[b]);
  }
  size_t scratchpad_bytes = 0;
  for (const Exec& e : execs_)
    if (e.prim) scratchpad_bytes = std::max(scratchpad_bytes, scratchpad_md(e.prim).get_size());
  if (scratchpad_bytes > 0) scratchpad_ = allocate_aligned(scratchpad_bytes, "primitive scratchpads");
  for (Exec& e : execs_) {
    e.args = e.fixed_args;
    for (const auto& a : e.buffer_args) e.args[a.arg] = memory(a.md, engine(), buffers_[a.buffer].get());
    const md_t scratchpad = e.prim ? scratchpad_md(e.prim) : md_t();
    if (scratchpad.get_size() > 0) e.args[DNNL_ARG_SCRATCHPAD] = memory(scratchpad, engine(), scratchpad_.get());
    for (const auto& [arg, mem] : e.fixed_args)
      if (arg == DNNL_ARG_WEIGHTS) report_.weight_bytes += static_cast<int64_t>(mem.get_desc().get_size());
    if (e.winograd) report_.weight_bytes += static_cast<int64_t>(e.winograd->weight_bytes());
    if (e.im2col) report_.weight_bytes += static_cast<int64_t>(e.shared_weights->get_desc().get_size());
  }
  allocate_winograd_scratch();
  input_user_ = memory(md_t(input_md.dims(), dt::f32, tag::nchw), engine(), nullptr);
  input_buffer_mem_ = memory(input_md, engine(), buffers_[0].get());
  input_reorder_ = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), input_user_.get_desc(), engine(), input_md, user_scratchpad()));
  input_reorder_args_ = with_own_scratchpad(input_reorder_, {{DNNL_ARG_FROM, input_user_}, {DNNL_ARG_TO, input_buffer_mem_}});
}

// Sizes the Winograd scratch for every conv that runs or may run the kernel (its weights count as the plan's) and
// for the im2col convs' column matrices (in the transformed inputs' buffer), or frees it when none needs it.
void Plan::allocate_winograd_scratch() {
  std::vector<const WinogradConv*> convs;
  for (const Exec& e : execs_)
    if (e.winograd) convs.push_back(e.winograd.get());
  for (const auto& [exec_index, candidates] : winograd_candidates_) {
    for (const WinogradConv* candidate : {candidates.f2x2.get(), candidates.f4x4.get()})
      if (candidate) convs.push_back(candidate);
  }
  size_t input_bytes = 0, products_bytes = 0;
  for (const WinogradConv* conv : convs) {
    input_bytes = std::max(input_bytes, conv->transformed_input_bytes());
    products_bytes = std::max(products_bytes, conv->products_bytes());
  }
  bool im2col = false;
  for (const Exec& e : execs_) {
    if (!e.im2col) continue;
    im2col = true;
    input_bytes = std::max(input_bytes, e.im2col->col_bytes());  // the column matrix takes the transformed inputs' buffer
  }
  report_.workspace_bytes = static_cast<int64_t>(input_bytes + products_bytes);
  winograd_input_.reset();
  winograd_products_.reset();
  if (convs.empty() && !im2col) return;
  winograd_input_ = allocate_aligned(input_bytes, "Winograd scratch");
  winograd_products_ = allocate_aligned(products_bytes, "Winograd scratch");
}

void Plan::execute(Exec& exec) {
  if (exec.small_input) {
    return exec.small_input->run(static_cast<const float*>(exec.args.at(DNNL_ARG_SRC).get_data_handle()), exec.args.at(DNNL_ARG_DST).get_data_handle());
  }
  if (exec.im2col) {
    return exec.im2col->run(static_cast<const float*>(exec.args.at(DNNL_ARG_SRC).get_data_handle()),
                            static_cast<float*>(exec.args.at(DNNL_ARG_DST).get_data_handle()), reinterpret_cast<float*>(winograd_input_.get()));
  }
  if (!exec.winograd) return exec.prim.execute(stream_, exec.args);
  exec.winograd->run(exec.args.at(DNNL_ARG_SRC).get_data_handle(), exec.args.at(DNNL_ARG_DST).get_data_handle(), winograd_input_.get(),
                     reinterpret_cast<float*>(winograd_products_.get()));
}

// Chooses direct, F(2x2) or F(4x4) for the convs that may run Winograd. Convs of one shape (a stage's blocks) form
// a group that gets one algorithm, and every algorithm's time for a group is measured in real forwards, in one of two
// ways (AutoTiming):
// - forward: the groups are decided one after the other, in network order, each by WHOLE forwards with that group on
//   each algorithm (the groups before it as decided, the ones after it direct), two turns, keeping the fastest. Layer
//   times do not add up at small batches: the weights that a choice streams from memory (31.7 MiB direct, 16/9x for
//   F(2x2), 4x for F(4x4)) slow the other layers too. Choosing layer by layer from per-layer times, noise mixed the
//   algorithms within a stage and each process ran a different mix. (Timed in one process, every mix of F(2x2) and
//   F(4x4) over A0's three groups ran within 3% of the others at batch 1 in fp32, so a close call costs little.)
// - convs: forwards with every group on one algorithm, timing each group's own convs inside them, two turns of the
//   three forwards. A long forward's noise is larger than what one group's choice changes (A0 fp32 at batch 32: a
//   ~150 ms forward, where stage 2 on F(4x4) saves ~6 ms over F(2x2) and single whole forwards picked either), while
//   the weights a choice streams matter little against a large batch's activations.
// By default a forward of kConvsTimingForwardMs or more is timed by convs, a shorter one by forwards.
// docs/ARCHITECTURE.md has the numbers.
void Plan::measure_conv_choices() {
  for (size_t b = 0; b < buffers_.size(); b++) {  // finite, non-zero data
    auto* values = reinterpret_cast<float*>(buffers_[b].get());
    for (size_t i = 0; i < buffer_bytes_[b] / sizeof(float); i++) values[i] = 0.01f;
  }
  std::vector<float> logits(static_cast<size_t>(logits_user_.get_desc().get_size() / sizeof(float)));
  logits_user_.set_data_handle(logits.data());  // run() binds the caller's
  constexpr int kDirect = 0, k2x2 = 1, k4x4 = 2, kAlgorithms = 3, kTurns = 2;
  constexpr double kConvsTimingForwardMs = 100;  // A0 fp32 on 2 cores: ~6 ms at batch 1, ~45 at 8, ~150 at 32
  // Whole-forward timing: about this many ms of forwards per configuration, in kTurns to kMaxForwardTurns turns.
  constexpr double kForwardTimingBudgetMs = 40;
  constexpr int kMaxForwardTurns = 8;
  auto candidate = [&](const WinogradCandidates& candidates, int algorithm) {
    return algorithm == kDirect ? nullptr : algorithm == k2x2 ? candidates.f2x2 : candidates.f4x4;
  };
  // Groups in network order: the exec indices of the convs of each shape.
  std::vector<std::vector<size_t>> groups;
  std::vector<int> group_of_exec(execs_.size(), -1);
  {
    std::map<std::array<int64_t, 5>, size_t> group_of_shape;
    std::vector<size_t> order;
    for (const auto& [exec_index, candidates] : winograd_candidates_) order.push_back(exec_index);
    std::sort(order.begin(), order.end());
    for (size_t exec_index : order) {
      const auto [it, added] = group_of_shape.try_emplace(winograd_candidates_.at(exec_index).shape, groups.size());
      if (added) groups.emplace_back();
      groups[it->second].push_back(exec_index);
      group_of_exec[exec_index] = static_cast<int>(it->second);
    }
  }
  auto has_candidate = [&](size_t group, int algorithm) {
    return algorithm == kDirect || candidate(winograd_candidates_.at(groups[group].front()), algorithm) != nullptr;  // bf16: no F(4x4)
  };
  auto set_group = [&](size_t group, int algorithm) {
    for (size_t exec_index : groups[group]) execs_[exec_index].winograd = candidate(winograd_candidates_.at(exec_index), algorithm);
  };
  auto set_all = [&](int algorithm) {
    for (size_t group = 0; group < groups.size(); group++) set_group(group, algorithm);
  };
  auto forward_ms = [&] {
    return time_ms([&] {
      for (Exec& e : execs_) execute(e);
      stream_.wait();
    });
  };
  // Each group's convs' ms in one forward.
  auto group_conv_ms = [&] {
    std::vector<double> ms(groups.size(), 0);
    for (size_t exec_index = 0; exec_index < execs_.size(); exec_index++) {
      if (group_of_exec[exec_index] < 0) {
        execute(execs_[exec_index]);
        continue;
      }
      stream_.wait();
      ms[group_of_exec[exec_index]] += time_ms([&] {
        execute(execs_[exec_index]);
        stream_.wait();
      });
    }
    stream_.wait();
    return ms;
  };
  std::vector<std::array<double, kAlgorithms>> group_ms(groups.size());  // best ms per algorithm, -1 = none
  for (auto& best_ms : group_ms) best_ms.fill(-1);
  auto keep_best = [&](size_t group, int algorithm, double ms) {
    double& best = group_ms[group][algorithm];
    best = best < 0 ? ms : std::min(best, ms);
  };
  std::vector<int> chosen(groups.size(), kDirect);
  auto choose = [&](size_t group) {
    for (int algorithm = 0; algorithm < kAlgorithms; algorithm++)
      if (group_ms[group][algorithm] >= 0 && group_ms[group][algorithm] < group_ms[group][chosen[group]]) chosen[group] = algorithm;
    set_group(group, chosen[group]);
  };

  set_all(kDirect);
  // The first forward warms the direct kernels up (fresh pages, first-run setup; under load it took over 100 ms for a
  // network whose warm forwards take a few), the second one's time decides.
  forward_ms();
  const double direct_forward_ms = forward_ms();
  report_.auto_timing_forward_ms = direct_forward_ms;
  const bool time_convs = spec_.auto_timing == AutoTiming::convs ||
                          (spec_.auto_timing == AutoTiming::by_length && direct_forward_ms >= kConvsTimingForwardMs);
  report_.auto_timing = time_convs ? "convs" : "forward";
  for (int algorithm : {k2x2, k4x4}) {  // warm-up: every candidate's weights and scratch touched once
    set_all(algorithm);
    forward_ms();
  }
  if (time_convs) {
    for (int turn = 0; turn < kTurns; turn++) {
      for (int algorithm = 0; algorithm < kAlgorithms; algorithm++) {
        set_all(algorithm);  // a group without this candidate runs direct and is not timed for it
        const std::vector<double> ms = group_conv_ms();
        for (size_t group = 0; group < groups.size(); group++)
          if (has_candidate(group, algorithm)) keep_best(group, algorithm, ms[group]);
      }
    }
    for (size_t group = 0; group < groups.size(); group++) choose(group);
  } else {
    // Short forwards get more turns, so that a hiccup in every timed forward of the faster algorithm is unlikely:
    // one forward at batch 1 varies by more than a group's choice changes it.
    const int forward_turns = std::clamp(static_cast<int>(kForwardTimingBudgetMs / std::max(direct_forward_ms, 1e-3)), kTurns, kMaxForwardTurns);
    set_all(kDirect);
    for (size_t group = 0; group < groups.size(); group++) {
      for (int turn = 0; turn < forward_turns; turn++) {
        for (int algorithm = 0; algorithm < kAlgorithms; algorithm++) {
          if (!has_candidate(group, algorithm)) continue;
          set_group(group, algorithm);
          keep_best(group, algorithm, forward_ms());
        }
      }
      choose(group);
    }
  }
  for (size_t group = 0; group < groups.size(); group++) {
    for (size_t exec_index : groups[group]) {
      Exec& exec = execs_[exec_index];
      const std::shared_ptr<WinogradConv>& winograd = exec.winograd;  // set_group left the chosen one
      for (ConvChoice& choice : report_.convs) {
        if (choice.step != exec.conv_step) continue;
        choice.direct_ms = group_ms[group][kDirect];
        choice.winograd2x2_ms = group_ms[group][k2x2];
        choice.winograd_ms = group_ms[group][k4x4];
        if (!winograd) continue;
        choice.algorithm = chosen[group] == k2x2 ? "winograd2x2" : "winograd";
        choice.implementation = winograd->implementation();
      }
      if (!winograd) continue;
      report_.weight_bytes += static_cast<int64_t>(winograd->weight_bytes()) -
                              static_cast<int64_t>(exec.args.at(DNNL_ARG_WEIGHTS).get_desc().get_size());
      exec.prim = dnnl::primitive();
      exec.args.erase(DNNL_ARG_WEIGHTS);
      exec.args.erase(DNNL_ARG_BIAS);
      exec.fixed_args.clear();
      exec.shared_weights.reset();  // the direct weights' last references (other plans may still hold them)
    }
  }
  winograd_candidates_.clear();  // and with it the transformed weights no conv chose
  allocate_winograd_scratch();   // for the convs that kept Winograd only
}

void Plan::run(const float* input, float* logits) {
  input_user_.set_data_handle(const_cast<float*>(input));
  logits_user_.set_data_handle(logits);
  input_reorder_.execute(stream_, input_reorder_args_);
  for (Exec& e : execs_) execute(e);
  stream_.wait();
}

// Image i of the input buffer starts i * image_bytes into it: the batch is the outermost, unblocked dimension of
// every layout oneDNN's CPU convolutions take (plain or channel-blocked), which this checks rather than assumes.
void Plan::run_parts(const std::vector<InputPart>& parts, float* logits) {
  const md_t& input_md = input_buffer_mem_.get_desc();
  const dnnl_memory_desc_t& c_md = input_md.data;
  const auto element = static_cast<int64_t>(dnnl::memory::data_type_size(input_md.data_type()));
  bool batch_blocked = false;
  for (int i = 0; i < c_md.format_desc.blocking.inner_nblks; i++) batch_blocked |= c_md.format_desc.blocking.inner_idxs[i] == 0;
  const int64_t image_bytes = c_md.format_desc.blocking.strides[0] * element;
  RV_CHECK(c_md.format_kind == dnnl_blocked && !batch_blocked && image_bytes * batch_ == static_cast<int64_t>(input_md.get_size()),
           "ERR_BACKEND", "the network's input layout does not hold its images one after the other");
  auto* base = static_cast<uint8_t*>(input_buffer_mem_.get_data_handle());
  const dnnl::memory::dims dims = input_md.dims();
  int64_t image = 0;
  for (const InputPart& part : parts) {
    auto found = part_reorders_.find(part.images);
    if (found == part_reorders_.end()) {
      const md_t from_md({part.images, dims[1], dims[2], dims[3]}, dt::f32, tag::nchw);
      const md_t to_md = input_md.submemory_desc({part.images, dims[1], dims[2], dims[3]}, {0, 0, 0, 0});
      PartReorder created{dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from_md, engine(), to_md, user_scratchpad())),
                          memory(from_md, engine(), nullptr), memory(to_md, engine(), nullptr), {}};
      created.args = with_own_scratchpad(created.reorder, {{DNNL_ARG_FROM, created.from}, {DNNL_ARG_TO, created.to}});
      found = part_reorders_.emplace(part.images, std::move(created)).first;
    }
    PartReorder& r = found->second;
    r.from.set_data_handle(const_cast<float*>(part.data));
    r.to.set_data_handle(base + image * image_bytes);
    r.reorder.execute(stream_, r.args);
    image += part.images;
  }
  std::memset(base + image * image_bytes, 0, static_cast<size_t>((batch_ - image) * image_bytes));  // padding images
  logits_user_.set_data_handle(logits);
  for (Exec& e : execs_) execute(e);
  stream_.wait();
}

Profile Plan::profile(int runs) {
  std::vector<float> input(static_cast<size_t>(input_user_.get_desc().get_size() / sizeof(float)), 0.01f);
  std::vector<float> logits(static_cast<size_t>(logits_user_.get_desc().get_size() / sizeof(float)));
  run(input.data(), logits.data());  // warm-up; also binds the user memories
  Profile profile;
  profile.runs = runs;
  profile.entries.push_back({-1, "input reorder", 0});
  for (const Exec& e : execs_) profile.entries.push_back({e.step, e.what, 0});
  std::vector<double> whole;
  for (int r = 0; r < runs; r++) {
    profile.entries[0].ms += time_ms([&] {
      input_reorder_.execute(stream_, input_reorder_args_);
      stream_.wait();
    });
    for (size_t e = 0; e < execs_.size(); e++) {
      profile.entries[e + 1].ms += time_ms([&] {
        execute(execs_[e]);
        stream_.wait();
      });
    }
    whole.push_back(time_ms([&] { run(input.data(), logits.data()); }));
  }
  for (ProfileEntry& entry : profile.entries) entry.ms /= runs;
  std::sort(whole.begin(), whole.end());
  profile.network_ms = whole[whole.size() / 2];
  return profile;
}

Program::Program(ProgramSpec spec) : spec_(std::move(spec)) { validate_network(spec_); }

Program::~Program() = default;

// A batch runs image-parallel when every thread gets the same number of single images, or when there are enough
// images that chunks of kImagesPerChunk keep every thread busy; else (three images on two threads: one thread alone
// on the third) the batch's own plan on the whole team finishes sooner.
bool Program::splits_images(int64_t batch, int64_t threads) const {
  return spec_.batch_threading == BatchThreading::images && threads >= 2 && batch >= 2 &&
         (batch % threads == 0 || batch >= kImagesPerChunk * threads);
}

// Chunks of kImagesPerChunk images, as many as make a multiple of the thread count, then single images. With more
// than two chunks per thread, each thread's last chunk goes one image at a time too, so that when one thread was
// held up (the event loop took its core) the other takes over its share in small pieces and the threads end
// together. Fixed by (batch, threads), so a batch's images always run through the same plans, whichever thread runs
// them: results do not depend on the timing.
std::vector<std::pair<int64_t, int64_t>> Program::image_chunks(int64_t batch, int64_t threads) {
  int64_t chunks = batch / (kImagesPerChunk * threads) * threads;
  if (chunks > 2 * threads) chunks -= threads;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t chunk = 0; chunk < chunks; chunk++) out.emplace_back(chunk * kImagesPerChunk, kImagesPerChunk);
  for (int64_t image = chunks * kImagesPerChunk; image < batch; image++) out.emplace_back(image, 1);
  return out;
}

std::vector<std::unique_ptr<Plan>>& Program::plans_for(const PlanKey& key) {
  const auto [batch, height, width, copies] = key;
  RV_CHECK(batch >= 1 && height >= 1 && width >= 1, "ERR_SHAPE", "input must have a positive batch and spatial size");
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    plan_order_.erase(std::find(plan_order_.begin(), plan_order_.end(), key));
    plan_order_.push_back(key);
    return it->second;
  }
  if (plans_.size() >= kMaxPlans) {  // drop the least recently used plans
    plans_.erase(plan_order_.front());
    plan_order_.erase(plan_order_.begin());
  }
  std::vector<std::unique_ptr<Plan>> built;
  wrap_dnnl("compiling network", [&] {
    if (copies == 0) {
      built.push_back(std::make_unique<Plan>(spec_, batch, height, width, winograd_weights_, reordered_weights_, nullptr));
      return;
    }
    // Compiled for one thread (oneDNN sizes its kernels' work for the threads it may use, the Winograd kernel
    // makes one part), and run inside our parallel region, where each primitive runs on the calling thread alone.
    // The compute thread's team size comes back however the compiling ends.
    struct SingleThreaded {
      const int team = omp_get_max_threads();
      SingleThreaded() { omp_set_num_threads(1); }
      ~SingleThreaded() { omp_set_num_threads(team); }
    } single_threaded;
    built.push_back(std::make_unique<Plan>(spec_, batch, height, width, winograd_weights_, reordered_weights_, nullptr));
    for (int64_t copy = 1; copy < copies; copy++)
      built.push_back(std::make_unique<Plan>(spec_, batch, height, width, winograd_weights_, reordered_weights_, &built.front()->report()));
  });
  plan_order_.push_back(key);
  return plans_.emplace(key, std::move(built)).first->second;
}

Plan& Program::plan_for(int64_t batch, int64_t height, int64_t width) { return *plans_for({batch, height, width, 0}).front(); }

void Program::run_images(int64_t batch, int64_t height, int64_t width, const std::vector<InputPart>& parts, float* logits) {
  const int64_t threads = omp_get_max_threads();
  const std::vector<std::pair<int64_t, int64_t>> chunks = image_chunks(batch, threads);
  std::vector<std::unique_ptr<Plan>>& singles = plans_for({1, height, width, threads});
  std::vector<std::unique_ptr<Plan>>& fours =
      chunks.front().second == kImagesPerChunk ? plans_for({kImagesPerChunk, height, width, threads}) : singles;
  const int64_t image_floats = spec_.in_channels * height * width;
  std::atomic<size_t> next_chunk{0};
  std::exception_ptr error;  // an exception must not leave an OpenMP region: the first one is rethrown after it
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const int thread = omp_get_thread_num();  // a team cut short by the runtime has fewer threads, never more
    std::vector<InputPart> chunk_parts;
    try {
      for (size_t chunk = next_chunk++; chunk < chunks.size(); chunk = next_chunk++) {
        const auto [first, images] = chunks[chunk];
        chunk_parts.clear();  // the parts' images first .. first + images (those past the parts: zeros)
        int64_t part_first = 0;
        for (const InputPart& part : parts) {
          const int64_t from = std::max(first, part_first), to = std::min(first + images, part_first + part.images);
          if (from < to) chunk_parts.push_back({part.data + (from - part_first) * image_floats, to - from});
          part_first += part.images;
        }
        Plan& plan = *(images == 1 ? singles : fours)[thread];
        plan.run_parts(chunk_parts, logits + first * spec_.classes);
      }
    } catch (...) {
      next_chunk = chunks.size();  // the other threads stop after their current chunk
#pragma omp critical(repvgg_program_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

void Program::run(int64_t batch, int64_t height, int64_t width, const float* input, float* logits) {
  on_compute_thread([&] {
    if (splits_images(batch, omp_get_max_threads())) {
      wrap_dnnl("running network", [&] { run_images(batch, height, width, {{input, batch}}, logits); });
      return;
    }
    Plan& plan = plan_for(batch, height, width);
    wrap_dnnl("running network", [&] { plan.run(input, logits); });
  });
}

void Program::run_parts(int64_t batch, int64_t height, int64_t width, const std::vector<InputPart>& parts, float* logits) {
  int64_t images = 0;
  for (const InputPart& part : parts) {
    RV_CHECK(part.images >= 1, "ERR_SHAPE", "an input part holds no image");
    images += part.images;
  }
  RV_CHECK(images <= batch, "ERR_SHAPE", "input parts hold " + std::to_string(images) + " images for a batch of " + std::to_string(batch));
  on_compute_thread([&] {
    if (splits_images(batch, omp_get_max_threads())) {
      wrap_dnnl("running network", [&] { run_images(batch, height, width, parts, logits); });
      return;
    }
    Plan& plan = plan_for(batch, height, width);
    wrap_dnnl("running network", [&] { plan.run_parts(parts, logits); });
  });
}

Profile Program::profile(int64_t batch, int64_t height, int64_t width, int runs) {
  RV_CHECK(runs >= 1 && runs <= 10000, "ERR_ARG_VALUE", "profile runs must be between 1 and 10000, got " + std::to_string(runs));
  Profile profile;
  on_compute_thread([&] {
    const int64_t threads = omp_get_max_threads();
    if (splits_images(batch, threads)) {  // one thread's plan for the batch's first (largest) chunk, run alone
      const int64_t images = image_chunks(batch, threads).front().second;
      Plan& plan = *plans_for({images, height, width, threads}).front();
      profile = wrap_dnnl("profiling network", [&] { return plan.profile(runs); });
      profile.threading = "images";
      profile.images = images;
      profile.threads = 1;
      return;
    }
    Plan& plan = plan_for(batch, height, width);
    profile = wrap_dnnl("profiling network", [&] { return plan.profile(runs); });
    profile.images = batch;
    profile.threads = threads;
  });
  return profile;
}

PlanReport Program::prepare(int64_t batch, int64_t height, int64_t width) {
  PlanReport report;
  on_compute_thread([&] {
    const int64_t threads = omp_get_max_threads();
    if (!splits_images(batch, threads)) {
      report = plan_for(batch, height, width).report();
      report.images_per_plan = batch;
      report.threads = threads;
      return;
    }
    // Both chunk sizes, whichever this batch uses, so that every batch that splits by images finds its plans.
    const int64_t largest = image_chunks(batch, threads).front().second;
    int64_t activation_bytes = 0, workspace_bytes = 0;
    for (int64_t images : {kImagesPerChunk, int64_t{1}}) {
      std::vector<std::unique_ptr<Plan>>& copies = plans_for({images, height, width, threads});
      if (images == largest) report = copies.front()->report();
      for (const std::unique_ptr<Plan>& copy : copies) {
        activation_bytes += copy->report().activation_bytes;
        workspace_bytes += copy->report().workspace_bytes;
      }
    }
    report.batch = batch;
    report.activation_bytes = activation_bytes;
    report.workspace_bytes = workspace_bytes;
    report.threading = "images";
    report.images_per_plan = largest;
    report.threads = threads;
  });
  return report;
}

}  // namespace repvgg::cpu
