// The body of the LSTM's in-register step (lstm_registers.h), written once over a vector type V and
// included by one file per instruction set (lstm_avx512.cc, lstm_avx2.cc) after its `#pragma GCC target`
// and inside an unnamed namespace, so that each file's copy is its own and built for its own instructions
// (<immintrin.h>, <cstdint> and lstm_registers.h included before). V gives:
//   V::W                       floats per vector; a panel is W units, their four gates side by side
//   V::MR                      sequences per tile: 4·MR accumulators, the rest of the registers for operands
//   V::reg                     the vector type
//   V::NB, V::KC               sequences and panel rows in the blocks a panel is walked in (step_units)
//   zero, set1, load and store (aligned), loadu, storeu, stream (aligned, around the caches), fence (after streams),
//   add, sub, mul, fmadd (a·b + c), fnmadd (c - a·b), fmsub (a·b - c), min, max, round (to nearest),
//   scale (v · 2^n, n a whole number in [-126, 127] held as a float), rcp_estimate (1/d to at least 11 bits)
// Not built with -ffast-math: min and max return their second operand where one is NaN, and exp below puts
// x second so that a NaN stays one.

// exp(x) for the gate functions, x clamped to [-87, 80]: 2^n · e^r, |r| <= ln2 / 2, a degree-7 polynomial
// (relative error ~1e-7). Up to 80, so that 1 / (1 + e^x) stays a normal float (no denormal gate values).
template <class V>
inline typename V::reg vexp(typename V::reg x) {
  x = V::max(V::set1(-87.0f), V::min(V::set1(80.0f), x));
  const auto n = V::round(V::mul(x, V::set1(1.44269504f)));
  auto r = V::fnmadd(n, V::set1(0.693145751953125f), x);
  r = V::fnmadd(n, V::set1(1.428606765330187e-06f), r);
  auto poly = V::set1(1.0f / 5040);
  poly = V::fmadd(poly, r, V::set1(1.0f / 720));
  poly = V::fmadd(poly, r, V::set1(1.0f / 120));
  poly = V::fmadd(poly, r, V::set1(1.0f / 24));
  poly = V::fmadd(poly, r, V::set1(1.0f / 6));
  poly = V::fmadd(poly, r, V::set1(0.5f));
  poly = V::fmadd(poly, r, V::set1(1.0f));
  poly = V::fmadd(poly, r, V::set1(1.0f));
  return V::scale(poly, n);
}

// 1 / d: the estimate and one Newton step
template <class V>
inline typename V::reg vrcp(typename V::reg d) {
  const auto r = V::rcp_estimate(d);
  return V::mul(r, V::fnmadd(d, r, V::set1(2.0f)));
}

template <class V>
inline typename V::reg vsigmoid(typename V::reg x) {
  return vrcp<V>(V::add(V::set1(1.0f), vexp<V>(V::sub(V::zero(), x))));
}

template <class V>
inline typename V::reg vtanh(typename V::reg x) {  // 2σ(2x) - 1: absolute error ~1e-7
  return V::fmsub(V::set1(2.0f), vsigmoid<V>(V::add(x, x)), V::set1(1.0f));
}

// Where a tile's products run: rows k0..k1 of the panel; at the first (k0 = 0) the sums start from zero,
// else from `part`, where the block before left them (MR rows of 4W floats); at the last (k1 = p) the
// equations follow, else the sums go back to `part`.
struct Block {
  int k0, k1;
  float* part;
};

// Sequences n0..n0+MR × W units from u: the four gates' U_a a_prev accumulated in registers over a block of
// k, then (at the last block) the equations.
template <class V, int MR>
inline void tile(const LstmStep& s, int n0, int u, const float* panel, const Block& blk, bool stream_out) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const int p = s.p;
  const int64_t wx_ld = s.wx_ld;
  const float *a_prev = s.a_prev, *b = s.b, *c_prev = s.c_prev, *keep = s.keep;
  float *wx = s.wx, *c = s.c, *a = s.a, *out = s.out;
  const bool first = blk.k0 == 0, last = blk.k1 == p;
  reg acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = first ? V::zero() : V::load(blk.part + (r * 4 + q) * W);
  const float* A = a_prev + int64_t(n0) * p;
  if (last) {
    for (int r = 0; r < MR; ++r) {  // what the equations below read, fetched while the products run
      const float* g = wx + (n0 + r) * wx_ld + u;
      for (int q = 0; q < 4; ++q) _mm_prefetch(reinterpret_cast<const char*>(g + q * p), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c_prev + (n0 + r) * int64_t(p) + u), _MM_HINT_T0);
    }
  }
  for (int k = blk.k0; k < blk.k1; ++k) {
    const float* bk = panel + int64_t(k) * 4 * W;
    const reg b0 = V::load(bk), b1 = V::load(bk + W), b2 = V::load(bk + 2 * W), b3 = V::load(bk + 3 * W);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const reg x = V::set1(A[int64_t(r) * p + k]);
      acc[r][0] = V::fmadd(x, b0, acc[r][0]);
      acc[r][1] = V::fmadd(x, b1, acc[r][1]);
      acc[r][2] = V::fmadd(x, b2, acc[r][2]);
      acc[r][3] = V::fmadd(x, b3, acc[r][3]);
    }
  }
  if (!last) {
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < 4; ++q) V::store(blk.part + (r * 4 + q) * W, acc[r][q]);
    return;
  }
  const reg one = V::set1(1.0f);
  for (int r = 0; r < MR; ++r) {
    const int64_t n = n0 + r;
    float* g = wx + n * wx_ld + u;
    reg pre[4];  // s = W_a x_t + U_a a_{t-1} + b_a, gates i, f, g, o (lstm_row in cells.h)
    for (int q = 0; q < 4; ++q) pre[q] = V::add(acc[r][q], V::add(V::loadu(g + q * p), V::loadu(b + q * p + u)));
    const reg kp = V::set1(keep[n]);
    const reg i = V::mul(kp, vsigmoid<V>(pre[0]));
    const reg f = V::add(V::mul(kp, vsigmoid<V>(pre[1])), V::sub(one, kp));
    const reg gg = vtanh<V>(pre[2]);
    const reg o = vsigmoid<V>(pre[3]);
    if (s.keep_gates) {  // for the backward, in place of W_a x_t
      V::storeu(g, i);
      V::storeu(g + p, f);
      V::storeu(g + 2 * p, gg);
      V::storeu(g + 3 * p, o);
    }
    const reg cn = V::fmadd(f, V::loadu(c_prev + n * p + u), V::mul(i, gg));
    const reg an = V::mul(o, vtanh<V>(cn));
    V::storeu(c + n * p + u, cn);
    V::storeu(a + n * p + u, an);
    if (stream_out) {
      V::stream(out + n * s.out_ld + u, an);
    } else if (out) {
      V::storeu(out + n * s.out_ld + u, an);
    }
  }
}

// The last `rows` < MR sequences of a row block, from n, R or fewer: one tile of that many.
template <class V, int R>
inline void last_tile(const LstmStep& s, int n, int rows, int u, const float* panel, const Block& blk, bool stream_out) {
  if constexpr (R > 0) {
    if (rows == R) {
      tile<V, R>(s, n, u, panel, blk, stream_out);
    } else {
      last_tile<V, R - 1>(s, n, rows, u, panel, blk, stream_out);
    }
  }
}

// Units u0..u1 (multiples of W) of the step: for each W units, sequences in row blocks of up to V::NB
// (a multiple of MR), each block's rows in tiles of MR, the panel's rows in blocks of V::KC, so that a
// block of the panel stays in the core's first-level cache while every tile of the row block reads it.
template <class V>
void step_units(const LstmStep& s, int u0, int u1) {
  constexpr int W = V::W, MR = V::MR, NB = V::NB, KC = V::KC;
  static_assert(NB % MR == 0);
  alignas(64) float part[NB * 4 * W];  // the row block's sums between blocks of k
  const bool stream_out = s.out && reinterpret_cast<uintptr_t>(s.out) % 64 == 0 && s.out_ld % 16 == 0;
  for (int j = 0; j < (u1 - u0) / W; ++j) {
    const int u = s.units_last_first ? u1 - W * (j + 1) : u0 + W * j;
    const float* panel = s.panels + int64_t(u / W) * s.p * 4 * W;
    for (int nb = 0; nb < s.B; nb += NB) {
      const int n1 = nb + NB < s.B ? nb + NB : s.B;
      for (int k0 = 0; k0 < s.p; k0 += KC) {
        const int k1 = k0 + KC < s.p ? k0 + KC : s.p;
        int n = nb;
        for (; n + MR <= n1; n += MR) tile<V, MR>(s, n, u, panel, {k0, k1, part + (n - nb) * 4 * W}, stream_out);
        last_tile<V, MR - 1>(s, n, n1 - n, u, panel, {k0, k1, part + (n - nb) * 4 * W}, stream_out);
      }
    }
  }
  if (stream_out) V::fence();  // the streamed stores seen by whoever reads out after this step
}
