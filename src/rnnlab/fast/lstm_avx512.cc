#include "lstm_avx512.h"

#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

namespace rnnlab {
namespace {

// exp(x) for the gate functions, x clamped to [-87, 80]: 2^n · e^r, |r| <= ln2 / 2, a degree-7 polynomial
// (relative error ~1e-7). Up to 80, so that 1 / (1 + e^x) stays a normal float (no denormal gate values).
// (min and max return their second operand where one is NaN: x second, so that a NaN stays one; this file
// is built without -ffast-math, which would let the compiler swap them.)
AVX512 inline __m512 vexp(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), _mm512_min_ps(_mm512_set1_ps(80.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 q = _mm512_set1_ps(1.0f / 5040);
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 720));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 120));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 24));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 6));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(q, n);
}

// 1 / d: the 14-bit estimate and one Newton step
AVX512 inline __m512 vrcp(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}
AVX512 inline __m512 vsigmoid(__m512 x) {
  return vrcp(_mm512_add_ps(_mm512_set1_ps(1.0f), vexp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}
AVX512 inline __m512 vtanh(__m512 x) {  // 2σ(2x) - 1: absolute error ~1e-7 (relative, near 0, larger)
  return _mm512_fmsub_ps(_mm512_set1_ps(2.0f), vsigmoid(_mm512_add_ps(x, x)), _mm512_set1_ps(1.0f));
}

// Sequences n0..n0+MR × 16 units from u: the four gates' U_a a_prev accumulated in registers (4·MR of the
// 32 vector registers), then the equations.
template <int MR>
AVX512 void tile(const LstmStep& s, int n0, int u, const float* panel, bool stream_y) {
  const int p = s.p;
  const int64_t gx_ld = s.gx_ld;
  const float *a_prev = s.a_prev, *b = s.b, *c_prev = s.c_prev, *keep = s.keep;
  float *gx = s.gx, *c = s.c, *a = s.a, *y = s.y;
  __m512 acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = _mm512_setzero_ps();
  const float* A = a_prev + int64_t(n0) * p;
  for (int r = 0; r < MR; ++r) {  // what the equations below read, fetched while the products run
    const float* g = gx + (n0 + r) * gx_ld + u;
    for (int q = 0; q < 4; ++q) _mm_prefetch(reinterpret_cast<const char*>(g + q * p), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c_prev + (n0 + r) * int64_t(p) + u), _MM_HINT_T0);
  }
  for (int k = 0; k < p; ++k) {
    const float* bk = panel + int64_t(k) * 64;
    const __m512 b0 = _mm512_load_ps(bk), b1 = _mm512_load_ps(bk + 16), b2 = _mm512_load_ps(bk + 32),
                 b3 = _mm512_load_ps(bk + 48);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(A[int64_t(r) * p + k]);
      acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(x, b3, acc[r][3]);
    }
  }
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int r = 0; r < MR; ++r) {
    const int64_t n = n0 + r;
    float* g = gx + n * gx_ld + u;
    __m512 z[4];  // W_a x + U_a a + b_a, gates i, f, g, o
    for (int q = 0; q < 4; ++q)
      z[q] = _mm512_add_ps(acc[r][q], _mm512_add_ps(_mm512_loadu_ps(g + q * p), _mm512_loadu_ps(b + q * p + u)));
    const __m512 kp = _mm512_set1_ps(keep[n]);
    const __m512 i = _mm512_mul_ps(kp, vsigmoid(z[0]));
    const __m512 f = _mm512_add_ps(_mm512_mul_ps(kp, vsigmoid(z[1])), _mm512_sub_ps(one, kp));
    const __m512 gg = vtanh(z[2]);
    const __m512 o = vsigmoid(z[3]);
    if (s.keep_gates) {  // for the backward, in place of W_a x
      _mm512_storeu_ps(g, i);
      _mm512_storeu_ps(g + p, f);
      _mm512_storeu_ps(g + 2 * p, gg);
      _mm512_storeu_ps(g + 3 * p, o);
    }
    const __m512 cn = _mm512_fmadd_ps(f, _mm512_loadu_ps(c_prev + n * p + u), _mm512_mul_ps(i, gg));
    const __m512 an = _mm512_mul_ps(o, vtanh(cn));
    _mm512_storeu_ps(c + n * p + u, cn);
    _mm512_storeu_ps(a + n * p + u, an);
    if (stream_y) {
      _mm512_stream_ps(y + n * s.y_ld + u, an);
    } else if (y) {
      _mm512_storeu_ps(y + n * s.y_ld + u, an);
    }
  }
}

}  // namespace

bool lstm_avx512_available() { return __builtin_cpu_supports("avx512f"); }

void pack_lstm_panels(const float* U, int p, int g0, int g1, float* panels) {
  for (int g = g0; g < g1; ++g) {
    float* panel = panels + int64_t(g) * p * 64;
    for (int k0 = 0; k0 < p; k0 += 16) {  // a (16 × 64) block at a time, written while in cache
      const int k1 = k0 + 16 < p ? k0 + 16 : p;
      for (int c = 0; c < 64; ++c) {
        const float* src = U + (int64_t(c / 16) * p + 16 * g + c % 16) * p;
        for (int k = k0; k < k1; ++k) panel[int64_t(k) * 64 + c] = src[k];
      }
    }
  }
}

void lstm_step_units(const LstmStep& s, int u0, int u1) {
  const bool stream_y = s.y && reinterpret_cast<uintptr_t>(s.y) % 64 == 0 && s.y_ld % 16 == 0;
  for (int j = 0; j < (u1 - u0) / 16; ++j) {
    const int u = s.units_last_first ? u1 - 16 * (j + 1) : u0 + 16 * j;
    const float* panel = s.panels + int64_t(u / 16) * s.p * 64;
    int n = 0;
    for (; n + 6 <= s.B; n += 6) tile<6>(s, n, u, panel, stream_y);
    switch (s.B - n) {
      case 5: tile<5>(s, n, u, panel, stream_y); break;
      case 4: tile<4>(s, n, u, panel, stream_y); break;
      case 3: tile<3>(s, n, u, panel, stream_y); break;
      case 2: tile<2>(s, n, u, panel, stream_y); break;
      case 1: tile<1>(s, n, u, panel, stream_y); break;
      default: break;
    }
  }
  if (stream_y) _mm_sfence();  // the streamed stores seen by whoever reads y after this step
}

}  // namespace rnnlab
