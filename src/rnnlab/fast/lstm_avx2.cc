// The LSTM's in-register step (lstm_registers.h) for AVX2 with FMA: 8 units a vector, tiles of 3 sequences.
#include <immintrin.h>

#include <cstdint>

#include "lstm_registers.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace rnnlab {
namespace {

struct V256 {
  static constexpr int W = 8, MR = 3;
  static constexpr int NB = 66, KC = 128;  // a panel block of 16 KB in a 32 KB L1
  using reg = __m256;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg load(const float* p) { return _mm256_load_ps(p); }
  static reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static void stream(float* p, reg v) { _mm256_stream_ps(p, v); }
  static void fence() { _mm_sfence(); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return _mm256_fmsub_ps(a, b, c); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg scale(reg q, reg n) {  // q · 2^n through the exponent's bits (n in [-126, 127])
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(q, _mm256_castsi256_ps(e));
  }
  static reg rcp_estimate(reg d) { return _mm256_rcp_ps(d); }
};

#include "lstm_tile.h"

}  // namespace

void lstm_step_units_avx2(const LstmStep& s, int u0, int u1) { step_units<V256>(s, u0, u1); }

}  // namespace rnnlab

#pragma GCC pop_options
