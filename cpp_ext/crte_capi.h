/* vinci_crte: the fused TEG gather + CRTE stitch, plain C ABI.
 *
 * One call writes the LLM's `inputs_embeds` (n x dim) from the text embedding table, the media banks
 * and the plan:
 *
 *   out[p] = source[kind[p]].data[src[p]], the first rot_dim channels rotated by CRTE:
 *     angle[j]         = (scale[p] * a[p]) * freqs_a[j]     j < len_a
 *     angle[len_a + j] = (scale[p] * b[p]) * freqs_b[j]     j < len_b
 *     out[2i]   = x[2i]   * cos(angle[2i])   - x[2i+1] * sin(angle[2i])
 *     out[2i+1] = x[2i+1] * cos(angle[2i+1]) + x[2i]   * sin(angle[2i+1])
 *   channels >= rot_dim = len_a + len_b are copied (converted to the output dtype).
 *
 * Sources are indexed by the plan's kind: 0 TEXT (the embedding table), 1 VIDEO, 2 AUDIO, 3 IMAGE
 * (vinci_edge.timeline). A source with len_a == len_b == 0 is a plain gather (text, images, an
 * encoder without time embedding). Angles, cos/sin and the rotation are computed in double and
 * rounded once to the output dtype, as the numpy reference (vinci_edge.stitch.numpy_stitch) does.
 *
 * A plain C ABI (no C++ types, no exceptions across it) so the library loads through ctypes with no
 * Python headers at build time, and links into any C/C++ host (an ONNX Runtime or TensorRT plugin).
 */
#ifndef VINCI_CRTE_CAPI_H
#define VINCI_CRTE_CAPI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define VINCI_CRTE_API __declspec(dllexport)
#else
#define VINCI_CRTE_API __attribute__((visibility("default")))
#endif

/* Bumped whenever a struct or signature below changes; the Python loader refuses a mismatch. */
#define VINCI_CRTE_ABI_VERSION 1

#define VINCI_CRTE_NUM_KINDS 4

/* Element types of sources and output. */
enum { VINCI_CRTE_F32 = 0, VINCI_CRTE_F16 = 1 };

/* Return codes (vinci_crte_strerror gives a sentence). */
enum {
  VINCI_CRTE_OK = 0,
  VINCI_CRTE_ERR_ARG = 1,       /* a NULL pointer, negative size, bad stride or dtype */
  VINCI_CRTE_ERR_KIND = 2,      /* a plan kind outside 0..3 */
  VINCI_CRTE_ERR_INDEX = 3,     /* a plan src outside its source's rows */
  VINCI_CRTE_ERR_NO_SOURCE = 4, /* the plan uses a kind whose source has no data */
  VINCI_CRTE_ERR_ROT = 5,       /* rot_dim = len_a + len_b is odd or wider than dim */
  VINCI_CRTE_ERR_NO_CUDA = 6,   /* the library was built without its CUDA part */
  VINCI_CRTE_ERR_CUDA = 7,      /* the CUDA launch failed */
  VINCI_CRTE_ERR_INTERNAL = 8   /* an unexpected C++ exception (out of memory, ...) */
};

/* One kind's rows and, optionally, its CRTE frequency table. For the CUDA entry point every pointer
 * here is a device pointer; the struct itself lives in host memory. */
typedef struct vinci_crte_source {
  const void* data;       /* rows x row_stride elements of `dtype`; NULL: the kind has no source */
  int64_t rows;           /* valid src values are 0 .. rows-1 */
  int64_t row_stride;     /* elements from one row to the next, >= dim */
  int32_t dtype;          /* VINCI_CRTE_F32 or VINCI_CRTE_F16 */
  int32_t len_a;          /* entries of freqs_a */
  int32_t len_b;          /* entries of freqs_b */
  int32_t reserved;       /* set to 0 (explicit padding: the layout is the same for every compiler) */
  const double* freqs_a;  /* may be NULL when len_a == 0 */
  const double* freqs_b;  /* may be NULL when len_b == 0 */
} vinci_crte_source;

/* The plan: n positions; pointers may be NULL when n == 0. Device pointers for the CUDA entry. */
typedef struct vinci_crte_plan {
  const int8_t* kind;
  const int64_t* src;
  const double* scale;
  const double* a;
  const double* b;
  int64_t n;
} vinci_crte_plan;

/* CPU: writes out (n x dim, rows out_stride elements apart, out_dtype). sources points to
 * VINCI_CRTE_NUM_KINDS entries. The whole plan is validated before anything is written, so an error
 * leaves out untouched. num_threads 0 = hardware concurrency; small plans run on the calling thread.
 * Thread-safe: no global state. */
VINCI_CRTE_API int vinci_crte_stitch_cpu(const vinci_crte_source* sources, const vinci_crte_plan* plan,
                                         int64_t dim, void* out, int64_t out_stride, int32_t out_dtype,
                                         int32_t num_threads);

/* CUDA: the same operation on device buffers, enqueued on `stream` (a cudaStream_t / CUstream, NULL
 * for the legacy default stream); returns without synchronising. Sizes, dtypes and rotation widths are
 * checked on the host; the per-position kind/src live on the device and are checked there: a bad one
 * writes a zero row and, when error_flag (a device int32) is non-NULL, stores VINCI_CRTE_ERR_KIND or
 * VINCI_CRTE_ERR_INDEX into it. Returns VINCI_CRTE_ERR_NO_CUDA when built without CUDA. */
VINCI_CRTE_API int vinci_crte_stitch_cuda(const vinci_crte_source* sources, const vinci_crte_plan* plan,
                                          int64_t dim, void* out, int64_t out_stride, int32_t out_dtype,
                                          int32_t* error_flag, void* stream);

VINCI_CRTE_API const char* vinci_crte_version(void);     /* "MAJOR.MINOR.PATCH" */
VINCI_CRTE_API int vinci_crte_abi_version(void);         /* VINCI_CRTE_ABI_VERSION */
VINCI_CRTE_API int vinci_crte_has_cuda(void);            /* 1 when the CUDA part was compiled in */
VINCI_CRTE_API int vinci_crte_cuda_device_count(void);   /* visible devices; -1 without CUDA/driver */
VINCI_CRTE_API const char* vinci_crte_cuda_archs(void);  /* e.g. "87;89;90;100;110", "" without CUDA */
VINCI_CRTE_API int vinci_crte_hardware_threads(void);    /* what num_threads = 0 means */
VINCI_CRTE_API const char* vinci_crte_strerror(int code);
/* The CUDA runtime's message for this thread's last VINCI_CRTE_ERR_CUDA ("" if none). */
VINCI_CRTE_API const char* vinci_crte_cuda_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* VINCI_CRTE_CAPI_H */
