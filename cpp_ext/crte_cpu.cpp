// The CPU stitch: gather + CRTE rotation + dtype conversion of every plan position in one pass over
// the output, positions split over std::threads.
//
// Why this shape:
// - one pass: each output row is written once, straight from its source row (numpy gathers, widens to
//   float64, rotates into a temporary and narrows: four passes over S x D);
// - channels >= rot_dim are a memcpy (same dtype) or a conversion loop the compiler vectorises;
//   only rot_dim (64 for omnivinci-9b's MTCT) channels go through double arithmetic;
// - cos/sin are computed once per position row, and reused while consecutive positions of a thread
//   have the same angles (an MTCT frame: all its tokens share one time), bit-identical either way;
// - std::thread, not OpenMP: no runtime library to ship or to fight ONNX Runtime's thread pool over.
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <exception>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "crte_capi.h"
#include "crte_check.h"
#include "crte_math.h"

namespace {

using vinci_crte::half_bits;
using vinci_crte::load_f32;
using vinci_crte::Store;

// Below this much output per thread, starting a thread costs more than it saves.
constexpr int64_t kMinBytesPerThread = int64_t{1} << 20;

template <typename Tin, typename Tout>
void copy_channels(const Tin* __restrict in, Tout* __restrict out, int64_t n) {
  if constexpr (std::is_same_v<Tin, Tout>) {
    memcpy(out, in, static_cast<size_t>(n) * sizeof(Tin));
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = Store<Tout>::from_f32(load_f32(in[i]));
  }
}

template <typename Tin, typename Tout>
void rotate_channels(const Tin* __restrict in, Tout* __restrict out, const double* __restrict c,
                     const double* __restrict s, int64_t rot) {
  for (int64_t i = 0; i < rot; i += 2) {
    double y0, y1;
    vinci_crte::crte_rotate_pair(load_f32(in[i]), load_f32(in[i + 1]), c[i], s[i], c[i + 1], s[i + 1], &y0,
                                 &y1);
    out[i] = Store<Tout>::from_f64(y0);
    out[i + 1] = Store<Tout>::from_f64(y1);
  }
}

// One output row from one source row; c/s hold cos/sin of the row's rot angles.
template <typename Tin, typename Tout>
void write_row(const void* in_row, void* out_row, const double* c, const double* s, int64_t rot, int64_t dim) {
  const Tin* in = static_cast<const Tin*>(in_row);
  Tout* out = static_cast<Tout*>(out_row);
  rotate_channels(in, out, c, s, rot);
  copy_channels(in + rot, out + rot, dim - rot);
}

using RowFn = void (*)(const void*, void*, const double*, const double*, int64_t, int64_t);

// [source dtype][output dtype]
constexpr RowFn kRowFns[2][2] = {
    {write_row<float, float>, write_row<float, half_bits>},
    {write_row<half_bits, float>, write_row<half_bits, half_bits>},
};

size_t elem_size(int32_t dtype) { return dtype == VINCI_CRTE_F16 ? 2 : 4; }

// cos/sin of the current angles, recomputed only when (kind, scale*a, scale*b) changes.
class AngleCache {
 public:
  explicit AngleCache(int64_t max_rot) : c_(static_cast<size_t>(max_rot)), s_(static_cast<size_t>(max_rot)) {}

  void update(int kind, const vinci_crte_source& src, double scale_a, double scale_b) {
    const uint64_t ka = vinci_crte::f64_bits(scale_a), kb = vinci_crte::f64_bits(scale_b);
    if (kind == kind_ && ka == key_a_ && kb == key_b_) return;
    const int rot = src.len_a + src.len_b;
    for (int j = 0; j < rot; ++j) {
      const double ang = vinci_crte::crte_angle(scale_a, scale_b, src.freqs_a, src.len_a, src.freqs_b, j);
      vinci_crte::crte_sincos(ang, &s_[static_cast<size_t>(j)], &c_[static_cast<size_t>(j)]);
    }
    kind_ = kind;
    key_a_ = ka;
    key_b_ = kb;
  }

  const double* cos() const { return c_.data(); }
  const double* sin() const { return s_.data(); }

 private:
  std::vector<double> c_, s_;
  int kind_ = -1;
  uint64_t key_a_ = 0, key_b_ = 0;
};

struct Job {
  const vinci_crte_source* sources;
  const vinci_crte_plan* plan;
  int64_t dim;
  char* out;
  int64_t out_row_bytes;
  int32_t out_dtype;
  int64_t max_rot;
};

void run_range(const Job& job, AngleCache& angles, int64_t begin, int64_t end) {
  const vinci_crte_plan& p = *job.plan;
  const int out_t = job.out_dtype == VINCI_CRTE_F16 ? 1 : 0;
  for (int64_t i = begin; i < end; ++i) {
    const int kind = p.kind[i];
    const vinci_crte_source& src = job.sources[kind];
    const char* in_row = static_cast<const char*>(src.data) +
                         static_cast<size_t>(p.src[i] * src.row_stride) * elem_size(src.dtype);
    const int64_t rot = vinci_crte::rot_dim(src);
    if (rot > 0) angles.update(kind, src, p.scale[i] * p.a[i], p.scale[i] * p.b[i]);
    const RowFn fn = kRowFns[src.dtype == VINCI_CRTE_F16 ? 1 : 0][out_t];
    fn(in_row, job.out + i * job.out_row_bytes, angles.cos(), angles.sin(), rot, job.dim);
  }
}

// Every position's kind and source row, before anything is written.
int check_positions(const vinci_crte_source* sources, const vinci_crte_plan& p) {
  for (int64_t i = 0; i < p.n; ++i) {
    const int kind = p.kind[i];
    if (kind < 0 || kind >= VINCI_CRTE_NUM_KINDS) return VINCI_CRTE_ERR_KIND;
    const vinci_crte_source& s = sources[kind];
    if (s.data == nullptr) return VINCI_CRTE_ERR_NO_SOURCE;
    if (p.src[i] < 0 || p.src[i] >= s.rows) return VINCI_CRTE_ERR_INDEX;
  }
  return VINCI_CRTE_OK;
}

int hardware_threads() {
#if defined(__linux__)
  // The CPUs this process may run on (a container's cpuset), not the machine's.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int stitch_cpu(const vinci_crte_source* sources, const vinci_crte_plan* plan, int64_t dim, void* out,
               int64_t out_stride, int32_t out_dtype, int32_t num_threads) {
  int rc = vinci_crte::check_call(sources, plan, dim, out, out_stride, out_dtype);
  if (rc != VINCI_CRTE_OK) return rc;
  if (num_threads < 0) return VINCI_CRTE_ERR_ARG;
  rc = check_positions(sources, *plan);
  if (rc != VINCI_CRTE_OK || plan->n == 0 || dim == 0) return rc;

  Job job{sources, plan, dim, static_cast<char*>(out),
          out_stride * static_cast<int64_t>(elem_size(out_dtype)), out_dtype, 0};
  for (int k = 0; k < VINCI_CRTE_NUM_KINDS; ++k)
    if (sources[k].data != nullptr) job.max_rot = std::max(job.max_rot, vinci_crte::rot_dim(sources[k]));

  const int64_t n = plan->n;
  const int64_t bytes = n * dim * static_cast<int64_t>(elem_size(out_dtype));
  int64_t threads = num_threads == 0 ? hardware_threads() : num_threads;
  threads = std::max<int64_t>(1, std::min({threads, n, bytes / kMinBytesPerThread}));

  // Contiguous ranges: each thread streams through its own part of the output. Everything a worker
  // needs is allocated here, so nothing can throw inside a thread.
  std::vector<AngleCache> caches(static_cast<size_t>(threads), AngleCache(job.max_rot));
  auto range = [&](int64_t t) {
    run_range(job, caches[static_cast<size_t>(t)], n * t / threads, n * (t + 1) / threads);
  };
  std::vector<std::thread> workers;
  int64_t spawned = 1;  // range 0 is the calling thread's
  try {
    workers.reserve(static_cast<size_t>(threads - 1));
    for (; spawned < threads; ++spawned) workers.emplace_back(range, spawned);
  } catch (const std::exception&) {
    // Could not start a thread: the calling thread does the ranges that have none.
  }
  range(0);
  for (int64_t t = spawned; t < threads; ++t) range(t);
  for (std::thread& w : workers) w.join();
  return VINCI_CRTE_OK;
}

}  // namespace

extern "C" {

int vinci_crte_stitch_cpu(const vinci_crte_source* sources, const vinci_crte_plan* plan, int64_t dim, void* out,
                          int64_t out_stride, int32_t out_dtype, int32_t num_threads) {
  try {
    return stitch_cpu(sources, plan, dim, out, out_stride, out_dtype, num_threads);
  } catch (...) {  // nothing may unwind through a C ABI
    return VINCI_CRTE_ERR_INTERNAL;
  }
}

int vinci_crte_hardware_threads(void) { return hardware_threads(); }

}  // extern "C"
