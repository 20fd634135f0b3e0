// Host-side argument checks shared by the CPU and CUDA entry points: everything that can be checked
// without reading the plan's per-position arrays (which the CUDA entry only has on the device).
#ifndef VINCI_CRTE_CHECK_H
#define VINCI_CRTE_CHECK_H

#include <stdint.h>

#include "crte_capi.h"

namespace vinci_crte {

inline bool valid_dtype(int32_t dtype) { return dtype == VINCI_CRTE_F32 || dtype == VINCI_CRTE_F16; }

inline int64_t rot_dim(const vinci_crte_source& s) {
  return static_cast<int64_t>(s.len_a) + static_cast<int64_t>(s.len_b);
}

// One source with data: shape, dtype and rotation width. A source without data is always fine (the
// plan may not use that kind; whether it does is checked per position).
inline int check_source(const vinci_crte_source& s, int64_t dim) {
  if (s.data == nullptr) return VINCI_CRTE_OK;
  if (s.rows < 0 || s.row_stride < dim || !valid_dtype(s.dtype) || s.len_a < 0 || s.len_b < 0)
    return VINCI_CRTE_ERR_ARG;
  if ((s.len_a > 0 && s.freqs_a == nullptr) || (s.len_b > 0 && s.freqs_b == nullptr))
    return VINCI_CRTE_ERR_ARG;
  const int64_t rot = rot_dim(s);
  if (rot % 2 != 0 || rot > dim) return VINCI_CRTE_ERR_ROT;
  return VINCI_CRTE_OK;
}

// The call as a whole and every source.
inline int check_call(const vinci_crte_source* sources, const vinci_crte_plan* plan, int64_t dim,
                      const void* out, int64_t out_stride, int32_t out_dtype) {
  if (sources == nullptr || plan == nullptr || dim < 0 || plan->n < 0 || out_stride < dim ||
      !valid_dtype(out_dtype))
    return VINCI_CRTE_ERR_ARG;
  if (plan->n > 0 && (plan->kind == nullptr || plan->src == nullptr || plan->scale == nullptr ||
                      plan->a == nullptr || plan->b == nullptr || (dim > 0 && out == nullptr)))
    return VINCI_CRTE_ERR_ARG;
  for (int k = 0; k < VINCI_CRTE_NUM_KINDS; ++k) {
    const int rc = check_source(sources[k], dim);
    if (rc != VINCI_CRTE_OK) return rc;
  }
  return VINCI_CRTE_OK;
}

}  // namespace vinci_crte

#endif  // VINCI_CRTE_CHECK_H
