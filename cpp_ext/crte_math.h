// The CRTE arithmetic shared by the C++ CPU kernel and the CUDA kernel: one definition of the angle,
// the pair rotation and the fp16 conversions, so both kernels round exactly the same way and match the
// numpy reference (vinci_edge/crte.py, vinci_edge/stitch/numpy_stitch.py).
//
// Precision contract (the reference's): angles, cos/sin and the rotation are double; the result is
// rounded ONCE to the output type (round to nearest even). No fused multiply-add may be formed: numpy
// rounds every product, so the CPU build passes -ffp-contract=off and the device code uses the _rn
// intrinsics, which nvcc never contracts.
#ifndef VINCI_CRTE_MATH_H
#define VINCI_CRTE_MATH_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define VINCI_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define VINCI_HD inline
#endif

namespace vinci_crte {

// fp16 is carried as its bit pattern: the host side then needs no compiler fp16 support (x86-64
// baseline has no F16C; _Float16 is not portable across the g++ versions JetPack ships).
using half_bits = uint16_t;

VINCI_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
#endif
}

VINCI_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
#endif
}

VINCI_HD uint64_t f64_bits(double d) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
#endif
}

VINCI_HD double f64_from_bits(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
#endif
}

// Rounded double arithmetic that is never contracted into an FMA (see the top of this file).
VINCI_HD double mul_rn(double x, double y) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(x, y);
#else
  return x * y;
#endif
}

VINCI_HD double add_rn(double x, double y) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(x, y);
#else
  return x + y;
#endif
}

VINCI_HD double sub_rn(double x, double y) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(x, y);
#else
  return x - y;
#endif
}

// fp16 -> fp32, exact. Every candidate is computed and one selected, with no branches, so the CPU
// conversion loops vectorise.
VINCI_HD float half_to_float(half_bits h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t shifted_exp = 0x7c00u << 13;
  const uint32_t em = (static_cast<uint32_t>(h) & 0x7fffu) << 13;  // exponent + mantissa in place
  const uint32_t exp = em & shifted_exp;
  const uint32_t normal = em + ((127u - 15u) << 23);                 // re-biased exponent
  const uint32_t inf_nan = normal + ((128u - 16u) << 23);            // exponent all ones
  // zero / subnormal: renormalise through an exact float subtraction of 2^-14
  const uint32_t subnormal = f32_bits(f32_from_bits(normal + (1u << 23)) - f32_from_bits(113u << 23));
  const uint32_t o = exp == shifted_exp ? inf_nan : (exp == 0 ? subnormal : normal);
  return f32_from_bits(o | ((static_cast<uint32_t>(h) & 0x8000u) << 16));
#endif
}

// fp32 -> fp16, round to nearest even; a NaN keeps its sign and top payload bits (as numpy's does).
// Branch-free for the same reason as half_to_float.
VINCI_HD half_bits float_to_half(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  const uint32_t bits = f32_bits(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t u = bits & 0x7fffffffu;
  // Inf / NaN (a NaN whose payload would vanish stays a NaN)
  const uint32_t sig = (u & 0x007fffffu) >> 13;
  const uint32_t inf_nan = 0x7c00u | sig | static_cast<uint32_t>((u & 0x007fffffu) != 0 && sig == 0);
  // < 2^-14: subnormal or zero; adding 0.5 aligns the half's lsb (2^-24) with the float's, and the
  // float addition rounds to nearest even
  const float magic = f32_from_bits(((127u - 15u) + (23u - 10u) + 1u) << 23);
  const uint32_t subnormal = f32_bits(f32_from_bits(u) + magic) - f32_bits(magic);
  // normal: re-bias, round to even on the 13 dropped bits (a carry into the exponent is correct,
  // up to Inf)
  const uint32_t normal = (u + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  const uint32_t o = u >= 0x7f800000u           ? inf_nan
                     : u >= ((127u + 16u) << 23) ? 0x7c00u  // >= 65536: overflow
                     : u < (113u << 23)          ? subnormal
                                                 : normal;
  return static_cast<half_bits>(o | sign);
#endif
}

// fp64 -> fp16 in ONE rounding (going through fp32 could round twice): how numpy casts the float64
// rotation result to float16. The scheme of float_to_half, on double bits.
VINCI_HD half_bits double_to_half(double d) {
  const uint64_t bits = f64_bits(d);
  const uint32_t sign = static_cast<uint32_t>(bits >> 48) & 0x8000u;
  const uint64_t u = bits & 0x7fffffffffffffffull;
  const uint64_t sig = (u & 0x000fffffffffffffull) >> 42;
  const uint64_t inf_nan = 0x7c00u | sig | static_cast<uint64_t>((u & 0x000fffffffffffffull) != 0 && sig == 0);
  const double magic = f64_from_bits(static_cast<uint64_t>(1023 + 28) << 52);  // 2^28: its ulp is 2^-24
  const uint64_t subnormal = f64_bits(add_rn(f64_from_bits(u), magic)) - f64_bits(magic);
  const uint64_t normal =
      (u + (static_cast<uint64_t>(15 - 1023) << 52) + ((uint64_t{1} << 41) - 1) + ((u >> 42) & 1u)) >> 42;
  const uint64_t o = u >= 0x7ff0000000000000ull                        ? inf_nan
                     : u >= (static_cast<uint64_t>(1023 + 16) << 52)   ? 0x7c00u
                     : u < (static_cast<uint64_t>(1023 - 14) << 52)    ? subnormal
                                                                       : normal;
  return static_cast<half_bits>(o | sign);
}

// Element loads / stores per storage type: float or half_bits.
VINCI_HD float load_f32(float x) { return x; }
VINCI_HD float load_f32(half_bits x) { return half_to_float(x); }

template <typename T>
struct Store;
template <>
struct Store<float> {
  static VINCI_HD float from_f64(double v) { return static_cast<float>(v); }
  static VINCI_HD float from_f32(float v) { return v; }
  static VINCI_HD float zero() { return 0.0f; }
};
template <>
struct Store<half_bits> {
  static VINCI_HD half_bits from_f64(double v) { return double_to_half(v); }
  static VINCI_HD half_bits from_f32(float v) { return float_to_half(v); }
  static VINCI_HD half_bits zero() { return 0; }
};

// angle[j] of one position: the coordinate product (scale * a or scale * b) is formed first, as numpy
// evaluates `scale * a * freqs` left to right.
VINCI_HD double crte_angle(double scale_a, double scale_b, const double* freqs_a, int len_a,
                           const double* freqs_b, int j) {
  return j < len_a ? mul_rn(scale_a, freqs_a[j]) : mul_rn(scale_b, freqs_b[j - len_a]);
}

VINCI_HD void crte_sincos(double angle, double* s, double* c) {
#if defined(__CUDA_ARCH__)
  sincos(angle, s, c);
#else
  *s = sin(angle);
  *c = cos(angle);
#endif
}

// One interleaved pair: x * cos + rotate_half(x) * sin with rotate_half(x0, x1) = (-x1, x0).
// x0 * c0 + (-x1) * s0 rounds exactly like x0 * c0 - x1 * s0 (negation is exact).
VINCI_HD void crte_rotate_pair(double x0, double x1, double c0, double s0, double c1, double s1, double* y0,
                               double* y1) {
  *y0 = sub_rn(mul_rn(x0, c0), mul_rn(x1, s0));
  *y1 = add_rn(mul_rn(x1, c1), mul_rn(x0, s1));
}

}  // namespace vinci_crte

#endif  // VINCI_CRTE_MATH_H
