// The CUDA stitch: one block per plan position (grid-stride over positions), the same arithmetic as the
// CPU kernel (crte_math.h).
//
// - Entry points take device pointers and a stream from the caller (ONNX Runtime's / TensorRT's
//   buffers and stream); nothing here allocates, copies to the host or synchronises.
// - Within a block every branch (kind, dtype, bounds) is uniform, so there is no divergence; threads
//   take the rotated channel pairs (each angle computed once, by the thread that uses it), then the
//   copied channels with 4-element vector accesses when the buffers allow.
// - Per-position errors (a bad kind or src) cannot be returned without a sync: the row is zeroed and
//   the optional device error flag is set.
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

#include "crte_build_info.h"
#include "crte_capi.h"
#include "crte_check.h"
#include "crte_math.h"

namespace {

using vinci_crte::half_bits;
using vinci_crte::load_f32;
using vinci_crte::Store;

constexpr int kThreads = 256;
thread_local char g_last_error[256] = "";  // vinci_crte_cuda_last_error
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride beyond this

struct KernelArgs {
  vinci_crte_source sources[VINCI_CRTE_NUM_KINDS];
  int32_t vec4[VINCI_CRTE_NUM_KINDS];  // rows of this source allow aligned 4-element loads
  int32_t out_vec4;                    // rows of out allow aligned 4-element stores
  const int8_t* kind;
  const int64_t* src;
  const double* scale;
  const double* a;
  const double* b;
  int64_t n;
  int64_t dim;
  int64_t out_stride;
  void* out;
  int32_t* error_flag;
};

template <typename T>
struct Vec4;
template <>
struct Vec4<float> {
  using type = float4;
};
template <>
struct Vec4<half_bits> {
  using type = ushort4;
};

template <typename Tin, typename Tout>
__device__ __forceinline__ Tout convert(Tin x) {
  return Store<Tout>::from_f32(load_f32(x));
}

template <typename Tin, typename Tout>
__device__ void copy_channels(const Tin* __restrict__ in, Tout* __restrict__ out, int64_t begin, int64_t end,
                              bool vec) {
  int64_t v0 = end, v1 = end;  // vector range [v0, v1), element indices multiple of 4
  if (vec) {
    v0 = begin + ((4 - (begin & 3)) & 3);
    v1 = end & ~int64_t{3};
    if (v0 > v1) v0 = v1 = end;
  }
  for (int64_t i = begin + threadIdx.x; i < v0; i += blockDim.x) out[i] = convert<Tin, Tout>(in[i]);
  using VIn = typename Vec4<Tin>::type;
  using VOut = typename Vec4<Tout>::type;
  for (int64_t i = v0 + 4 * static_cast<int64_t>(threadIdx.x); i < v1; i += 4 * blockDim.x) {
    const VIn x = *reinterpret_cast<const VIn*>(in + i);
    VOut y;
    y.x = convert<Tin, Tout>(x.x);
    y.y = convert<Tin, Tout>(x.y);
    y.z = convert<Tin, Tout>(x.z);
    y.w = convert<Tin, Tout>(x.w);
    *reinterpret_cast<VOut*>(out + i) = y;
  }
  for (int64_t i = v1 + threadIdx.x; i < end; i += blockDim.x) out[i] = convert<Tin, Tout>(in[i]);
}

template <typename Tin, typename Tout>
__device__ void write_row(const vinci_crte_source& s, const Tin* __restrict__ in, Tout* __restrict__ out,
                          double scale_a, double scale_b, int64_t dim, bool vec) {
  const int rot = s.len_a + s.len_b;
  for (int j = 2 * static_cast<int>(threadIdx.x); j < rot; j += 2 * blockDim.x) {
    double s0, c0, s1, c1, y0, y1;
    vinci_crte::crte_sincos(vinci_crte::crte_angle(scale_a, scale_b, s.freqs_a, s.len_a, s.freqs_b, j), &s0, &c0);
    vinci_crte::crte_sincos(vinci_crte::crte_angle(scale_a, scale_b, s.freqs_a, s.len_a, s.freqs_b, j + 1), &s1,
                            &c1);
    vinci_crte::crte_rotate_pair(load_f32(in[j]), load_f32(in[j + 1]), c0, s0, c1, s1, &y0, &y1);
    out[j] = Store<Tout>::from_f64(y0);
    out[j + 1] = Store<Tout>::from_f64(y1);
  }
  copy_channels(in, out, rot, dim, vec);
}

// Which source row position p reads, or why it cannot read one.
__device__ __forceinline__ int check_position(const KernelArgs& args, int kind, int64_t row) {
  if (kind < 0 || kind >= VINCI_CRTE_NUM_KINDS) return VINCI_CRTE_ERR_KIND;
  if (args.sources[kind].data == nullptr) return VINCI_CRTE_ERR_NO_SOURCE;
  if (row < 0 || row >= args.sources[kind].rows) return VINCI_CRTE_ERR_INDEX;
  return VINCI_CRTE_OK;
}

template <typename Tout>
__global__ void __launch_bounds__(kThreads) stitch_kernel(const KernelArgs args) {
  for (int64_t p = blockIdx.x; p < args.n; p += gridDim.x) {
    Tout* out = static_cast<Tout*>(args.out) + p * args.out_stride;
    const int kind = args.kind[p];
    const int64_t row = args.src[p];
    const int err = check_position(args, kind, row);
    if (err != VINCI_CRTE_OK) {
      if (threadIdx.x == 0 && args.error_flag != nullptr) atomicCAS(args.error_flag, 0, err);
      for (int64_t i = threadIdx.x; i < args.dim; i += blockDim.x) out[i] = Store<Tout>::zero();
      continue;
    }
    const vinci_crte_source& s = args.sources[kind];
    const double scale = args.scale[p];
    const double sa = vinci_crte::mul_rn(scale, args.a[p]);
    const double sb = vinci_crte::mul_rn(scale, args.b[p]);
    const bool vec = args.vec4[kind] && args.out_vec4;
    if (s.dtype == VINCI_CRTE_F16) {
      write_row(s, static_cast<const half_bits*>(s.data) + row * s.row_stride, out, sa, sb, args.dim, vec);
    } else {
      write_row(s, static_cast<const float*>(s.data) + row * s.row_stride, out, sa, sb, args.dim, vec);
    }
  }
}

int64_t elem_size(int32_t dtype) { return dtype == VINCI_CRTE_F16 ? 2 : 4; }

// 4-element vector access is safe when the base is aligned to 4 elements and rows stay aligned.
bool vec4_ok(const void* base, int64_t stride, int32_t dtype) {
  return reinterpret_cast<uintptr_t>(base) % static_cast<uintptr_t>(4 * elem_size(dtype)) == 0 && stride % 4 == 0;
}

int stitch_cuda(const vinci_crte_source* sources, const vinci_crte_plan* plan, int64_t dim, void* out,
                int64_t out_stride, int32_t out_dtype, int32_t* error_flag, void* stream) {
  g_last_error[0] = '\0';
  const int rc = vinci_crte::check_call(sources, plan, dim, out, out_stride, out_dtype);
  if (rc != VINCI_CRTE_OK) return rc;
  if (plan->n == 0 || dim == 0) return VINCI_CRTE_OK;

  KernelArgs args{};
  for (int k = 0; k < VINCI_CRTE_NUM_KINDS; ++k) {
    args.sources[k] = sources[k];
    args.vec4[k] = sources[k].data != nullptr && vec4_ok(sources[k].data, sources[k].row_stride, sources[k].dtype);
  }
  args.out_vec4 = vec4_ok(out, out_stride, out_dtype);
  args.kind = plan->kind;
  args.src = plan->src;
  args.scale = plan->scale;
  args.a = plan->a;
  args.b = plan->b;
  args.n = plan->n;
  args.dim = dim;
  args.out_stride = out_stride;
  args.out = out;
  args.error_flag = error_flag;

  const unsigned blocks = static_cast<unsigned>(plan->n < kMaxBlocks ? plan->n : kMaxBlocks);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (out_dtype == VINCI_CRTE_F16) {
    stitch_kernel<half_bits><<<blocks, kThreads, 0, s>>>(args);
  } else {
    stitch_kernel<float><<<blocks, kThreads, 0, s>>>(args);
  }
  // A launch error only (bad configuration, no device, no kernel image for this GPU): no sync.
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return VINCI_CRTE_OK;
  snprintf(g_last_error, sizeof g_last_error, "%s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
  return VINCI_CRTE_ERR_CUDA;
}

}  // namespace

extern "C" {

int vinci_crte_stitch_cuda(const vinci_crte_source* sources, const vinci_crte_plan* plan, int64_t dim, void* out,
                           int64_t out_stride, int32_t out_dtype, int32_t* error_flag, void* stream) {
  try {
    return stitch_cuda(sources, plan, dim, out, out_stride, out_dtype, error_flag, stream);
  } catch (...) {
    return VINCI_CRTE_ERR_INTERNAL;
  }
}

int vinci_crte_has_cuda(void) { return 1; }

int vinci_crte_cuda_device_count(void) {
  int n = 0;
  // Without a driver (libcuda) this fails cleanly: cudart is linked statically and loads it lazily.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // do not leave the error for the next caller to find
    return -1;
  }
  return n;
}

const char* vinci_crte_cuda_archs(void) { return VINCI_CRTE_CUDA_ARCHS; }

const char* vinci_crte_cuda_last_error(void) { return g_last_error; }

}  // extern "C"
