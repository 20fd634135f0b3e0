// The CUDA entry points of a build without a CUDA compiler: the ABI stays the same, the calls say why
// they cannot run.
#include "crte_capi.h"

extern "C" {

int vinci_crte_stitch_cuda(const vinci_crte_source*, const vinci_crte_plan*, int64_t, void*, int64_t, int32_t,
                           int32_t*, void*) {
  return VINCI_CRTE_ERR_NO_CUDA;
}

int vinci_crte_has_cuda(void) { return 0; }

int vinci_crte_cuda_device_count(void) { return -1; }

const char* vinci_crte_cuda_archs(void) { return ""; }

const char* vinci_crte_cuda_last_error(void) { return ""; }

}  // extern "C"
