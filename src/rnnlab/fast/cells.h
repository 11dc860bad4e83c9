// The cells' equations on one row (one sequence's p units at one step), and the types every engine file
// shares. The one home of these equations in C++: the kernel's forward and backward (kernel.cc) and the
// streaming step (step.cc) call these functions; the LSTM's in-register step (lstm_tile.h) writes
// lstm_row in vector registers; oneDNN (plan.cc) has its own.
//
//   a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)        (Elman)
//
// Names: wx = W_a x_t (G·p), ua = U_a a_{t-1} (G·p), s = their sum with b_a, the pre-activations; the
// gates in PyTorch's order (GRU r, z, n; LSTM i, f, g, o), so z is the GRU's update gate and nothing else.
// Arrays by shape: x (B, T, k), a (B, T, p) every a_t, a0 and aT (B, p) a_0 and a_T, c0 and cT (B, p) an
// LSTM's c_0 and c_T; W_a (G·p, k), U_a (G·p, p), b_a (G·p,), c_n (p,) the GRU's bias inside the reset.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace rnnlab {

enum Cell : int { kElman = 0, kGru = 1, kGruResetAfter = 2, kLstm = 3 };
enum Act : int { kTanh = 0, kRelu = 1, kSigmoid = 2 };

// G: the blocks of p rows that W_a, U_a and b_a stack (Elman 1; GRU r, z, n: 3; LSTM i, f, g, o: 4).
constexpr int gates(int cell) { return cell == kElman ? 1 : cell == kLstm ? 4 : 3; }

struct Shape {
  int cell, act, reverse, masked, B, T, k, p;
  // Where a call runs steps t0..t0+T of longer sequences (a piece, kernel.h): their full length, the
  // distance between two sequences' rows in x, a, da and dx (0: T). Only the kernel runs pieces.
  int T_all = 0;
  // 1: each sequence read reversed within its own length (lengths (B,) given): step t of sequence n reads
  // x at L_n - 1 - t and writes a there, and steps t >= L_n stay in place (the kernel only: Elman and the
  // GRU with reset_after, whole sequences).
  int within = 0;
  int64_t seq_rows() const { return T_all > 0 ? T_all : T; }
  // Where step t of sequence n (lengths L, read as at most T) sits in the caller's batch-major arrays.
  int64_t at(const int32_t* L, int n, int t) const {
    const int length = within ? std::min(L[n], T) : 0;
    return t < length ? length - 1 - t : t;
  }
  int G() const { return gates(cell); }
  bool operator==(const Shape&) const = default;
};

struct ShapeHash {
  size_t operator()(const Shape& s) const {
    size_t h = 0;
    for (int v : {s.cell, s.act, s.reverse, s.masked, s.within, s.B, s.T, s.k, s.p}) h = h * 1000003u + size_t(v);
    return h;
  }
};

// Inputs of one call: x (B, T, k), a0 (B, p), c0 (B, p), W_a (G·p, k), U_a (G·p, p), b_a (G·p,),
// c_n (p,), lengths (B,). c0, c_n and lengths are null where the cell or mode has none (lengths: masked
// LSTM, or within).
struct Inputs {
  const float *x, *a0, *c0, *W, *U, *b, *c_n;
  const int32_t* lengths;
};

// Gradients written by one backward call, each the shape of its input (dx (B, T, k), da0 (B, p), ...);
// null where the cell has none.
struct Grads {
  float *dx, *da0, *dc0, *dW, *dU, *db, *dc_n;
};

// ---- one row of each cell, vectorised over the units ----
// (Internal linkage: each file that includes this header gets its own copies, cloned for its instruction
// sets; kernel.cc and step.cc are built with -ffast-math so that the gate functions vectorise.)
namespace {

#define RNNLAB_VECTOR __attribute__((target_clones("avx512f", "avx2", "default"), unused))

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// Elman: a_t = f_a(s + b_a) in place, s holding W_a x_t + U_a a_{t-1}.
RNNLAB_VECTOR void elman_row(float* __restrict s, const float* __restrict b, int p, int act) {
  if (act == kTanh) {
#pragma omp simd
    for (int j = 0; j < p; ++j) s[j] = std::tanh(s[j] + b[j]);
  } else if (act == kSigmoid) {
#pragma omp simd
    for (int j = 0; j < p; ++j) s[j] = sigmoid(s[j] + b[j]);
  } else {
#pragma omp simd
    for (int j = 0; j < p; ++j) s[j] = std::max(s[j] + b[j], 0.0f);
  }
}

// Elman backward: ds = (da_out + da) ⊙ f_a'(s), read from a = f_a(s) (tanh: 1 - a², sigmoid: a(1 - a),
// ReLU: a > 0). da_out: the gradient wrt a_t from the layer's output, da: from the step after.
RNNLAB_VECTOR void elman_row_back(const float* __restrict a, const float* __restrict da_out,
                                  const float* __restrict da, float* __restrict ds, int p, int act) {
  if (act == kTanh) {
#pragma omp simd
    for (int j = 0; j < p; ++j) ds[j] = (da_out[j] + da[j]) * (1.0f - a[j] * a[j]);
  } else if (act == kSigmoid) {
#pragma omp simd
    for (int j = 0; j < p; ++j) ds[j] = (da_out[j] + da[j]) * a[j] * (1.0f - a[j]);
  } else {
#pragma omp simd
    for (int j = 0; j < p; ++j) ds[j] = a[j] > 0.0f ? da_out[j] + da[j] : 0.0f;
  }
}

// GRU with reset_after (PyTorch's), gates r, z, n:
//   r = σ(W_r x_t + b_r + U_r a_{t-1})   z = σ(W_z x_t + b_z + U_z a_{t-1})   un = U_n a_{t-1} + c_n
//   n = tanh(W_n x_t + b_n + r ⊙ un)     a_t = (1 - z) ⊙ n + z ⊙ a_{t-1}
// wx holds W_a x_t (3p) and becomes r, z, n; ua holds U_a a_{t-1} (3p); un (p) is kept for the backward.
RNNLAB_VECTOR void gru_row(float* __restrict wx, const float* __restrict ua, const float* __restrict b,
                           const float* __restrict c_n, const float* __restrict a_prev, float* __restrict un,
                           float* __restrict a, int p) {
  float *r = wx, *z = wx + p, *n = wx + 2 * p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    r[j] = sigmoid(r[j] + b[j] + ua[j]);
    z[j] = sigmoid(z[j] + b[p + j] + ua[p + j]);
    un[j] = ua[2 * p + j] + c_n[j];
    n[j] = std::tanh(n[j] + b[2 * p + j] + r[j] * un[j]);
    a[j] = (1.0f - z[j]) * n[j] + z[j] * a_prev[j];
  }
}

// GRU backward. da_out + da: the gradient wrt a_t. Writes the pre-activations' gradients as U_a sees
// them, ds_u = (ds_r, ds_z, ds_n ⊙ r), and as W_a sees them, ds_w = (ds_r, ds_z, ds_n); da becomes
// (da_out + da) ⊙ z, the part of the gradient wrt a_{t-1} that does not pass through U_a.
RNNLAB_VECTOR void gru_row_back(const float* __restrict gate, const float* __restrict un,
                                const float* __restrict a_prev, const float* __restrict da_out,
                                float* __restrict da, float* __restrict ds_u, float* __restrict ds_w, int p) {
  const float *r = gate, *z = gate + p, *n = gate + 2 * p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    const float da_t = da_out[j] + da[j];
    const float ds_n = da_t * (1.0f - z[j]) * (1.0f - n[j] * n[j]);
    const float ds_z = da_t * (a_prev[j] - n[j]) * z[j] * (1.0f - z[j]);
    const float ds_r = ds_n * un[j] * r[j] * (1.0f - r[j]);
    ds_u[j] = ds_w[j] = ds_r;
    ds_u[p + j] = ds_w[p + j] = ds_z;
    ds_u[2 * p + j] = ds_n * r[j];
    ds_w[2 * p + j] = ds_n;
    da[j] = da_t * z[j];
  }
}

// GRU without reset_after (Cho et al. 2014), in two parts around U_n (r ⊙ a_{t-1}), which reads r:
//   r = σ(W_r x_t + b_r + U_r a_{t-1})   z = σ(W_z x_t + b_z + U_z a_{t-1})   ra = r ⊙ a_{t-1}
// wx holds W_a x_t (3p), its r and z rows becoming the gates; ua holds U_r a_{t-1}, U_z a_{t-1} (2p).
RNNLAB_VECTOR void gru_cho_gates(float* __restrict wx, const float* __restrict ua, const float* __restrict b,
                                 const float* __restrict a_prev, float* __restrict ra, int p) {
  float *r = wx, *z = wx + p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    r[j] = sigmoid(r[j] + b[j] + ua[j]);
    z[j] = sigmoid(z[j] + b[p + j] + ua[p + j]);
    ra[j] = r[j] * a_prev[j];
  }
}

//   n = tanh(W_n x_t + U_n (r ⊙ a_{t-1}) + b_n)   a_t = (1 - z) ⊙ n + z ⊙ a_{t-1}
// wx as gru_cho_gates left it, its n rows holding W_n x_t + U_n (r ⊙ a_{t-1}) and becoming n.
RNNLAB_VECTOR void gru_cho_row(float* __restrict wx, const float* __restrict b, const float* __restrict a_prev,
                               float* __restrict a, int p) {
  const float* z = wx + p;
  float* n = wx + 2 * p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    n[j] = std::tanh(n[j] + b[2 * p + j]);
    a[j] = (1.0f - z[j]) * n[j] + z[j] * a_prev[j];
  }
}

// LSTM, gates i, f, g, o: c_t = f ⊙ c_{t-1} + i ⊙ g, a_t = o ⊙ tanh(c_t). s holds W_a x_t + U_a a_{t-1}
// (4p) and becomes the gates. On a padding step (pad) i = 0 and f = 1, so c stays what it was at the
// sequence's end.
RNNLAB_VECTOR void lstm_row(float* __restrict s, const float* __restrict b, const float* __restrict c_prev,
                            float* __restrict c, float* __restrict a, int p, bool pad) {
  float *i = s, *f = s + p, *g = s + 2 * p, *o = s + 3 * p;
  const float keep = pad ? 0.0f : 1.0f;  // arithmetic, not a branch, so that the loop vectorises
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    i[j] = keep * sigmoid(i[j] + b[j]);
    f[j] = keep * sigmoid(f[j] + b[p + j]) + (1.0f - keep);
    g[j] = std::tanh(g[j] + b[2 * p + j]);
    o[j] = sigmoid(o[j] + b[3 * p + j]);
    c[j] = f[j] * c_prev[j] + i[j] * g[j];
    a[j] = o[j] * std::tanh(c[j]);
  }
}

// LSTM backward: da_out + da is the gradient wrt a_t; dc (carried from t+1) becomes the gradient wrt
// c_{t-1}; ds (4p) the pre-activations'. i(1-i) and f(1-f) are 0 on padding steps, so nothing reaches
// their weights there.
RNNLAB_VECTOR void lstm_row_back(const float* __restrict gate, const float* __restrict c,
                                 const float* __restrict c_prev, const float* __restrict da_out,
                                 const float* __restrict da, float* __restrict dc, float* __restrict ds, int p) {
  const float *i = gate, *f = gate + p, *g = gate + 2 * p, *o = gate + 3 * p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    const float da_t = da_out[j] + da[j];
    const float tc = std::tanh(c[j]);
    const float dc_t = dc[j] + da_t * o[j] * (1.0f - tc * tc);
    ds[j] = dc_t * g[j] * i[j] * (1.0f - i[j]);
    ds[p + j] = dc_t * c_prev[j] * f[j] * (1.0f - f[j]);
    ds[2 * p + j] = dc_t * i[j] * (1.0f - g[j] * g[j]);
    ds[3 * p + j] = da_t * tc * o[j] * (1.0f - o[j]);
    dc[j] = dc_t * f[j];
  }
}

// acc[0:n] += row[0:n]
RNNLAB_VECTOR void add_row(const float* __restrict row, float* __restrict acc, int n) {
#pragma omp simd
  for (int j = 0; j < n; ++j) acc[j] += row[j];
}

}  // namespace
}  // namespace rnnlab
