// Version and error strings of the library.
#include "crte_build_info.h"
#include "crte_capi.h"

extern "C" {

const char* vinci_crte_version(void) { return VINCI_CRTE_VERSION; }

int vinci_crte_abi_version(void) { return VINCI_CRTE_ABI_VERSION; }

const char* vinci_crte_strerror(int code) {
  switch (code) {
    case VINCI_CRTE_OK:
      return "ok";
    case VINCI_CRTE_ERR_ARG:
      return "invalid argument (NULL pointer, negative size, row stride < dim, or unknown dtype)";
    case VINCI_CRTE_ERR_KIND:
      return "a plan position has a kind outside 0..3";
    case VINCI_CRTE_ERR_INDEX:
      return "a plan position's src is outside its source's rows";
    case VINCI_CRTE_ERR_NO_SOURCE:
      return "the plan uses a kind that has no source data";
    case VINCI_CRTE_ERR_ROT:
      return "a CRTE rotation width (len_a + len_b) is odd or wider than dim";
    case VINCI_CRTE_ERR_NO_CUDA:
      return "the library was built without CUDA";
    case VINCI_CRTE_ERR_CUDA:
      return "the CUDA kernel launch failed";
    case VINCI_CRTE_ERR_INTERNAL:
      return "internal error (out of memory?)";
    default:
      return "unknown error code";
  }
}

}  // extern "C"
