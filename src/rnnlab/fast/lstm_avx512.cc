// The LSTM's in-register step (lstm_registers.h) for AVX-512: 16 units a vector, tiles of 6 sequences.
#include <immintrin.h>

#include <cstdint>

#include "lstm_registers.h"

#pragma GCC push_options
#pragma GCC target("avx512f")

namespace rnnlab {
namespace {

struct V512 {
  static constexpr int W = 16, MR = 6;
  static constexpr int NB = 96, KC = 1 << 30;  // (blocking k: within noise on a Xeon, its 48 KB L1)
  using reg = __m512;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg load(const float* p) { return _mm512_load_ps(p); }
  static reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static void stream(float* p, reg v) { _mm512_stream_ps(p, v); }
  static void fence() { _mm_sfence(); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return _mm512_fmsub_ps(a, b, c); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg scale(reg q, reg n) { return _mm512_scalef_ps(q, n); }
  static reg rcp_estimate(reg d) { return _mm512_rcp14_ps(d); }
};

#include "lstm_tile.h"

}  // namespace

void lstm_step_units_avx512(const LstmStep& s, int u0, int u1) { step_units<V512>(s, u0, u1); }

}  // namespace rnnlab

#pragma GCC pop_options
