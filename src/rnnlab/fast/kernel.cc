#include "kernel.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cells.h"
#include "gemm.h"
#include "lstm_registers.h"
#include "scratch.h"
#include "team.h"

namespace rnnlab {
namespace {

// Steps 0..T of sequences n0..n1 of B, batch-major (B, T_all, w) rows, to time-major (T, B, w), and back;
// with s.within, step t of sequence n is the caller's row s.at(L, n, t).
void to_time_major(const Shape& s, const int32_t* L, const float* from, int n0, int n1, int B, int w, float* to) {
  for (int n = n0; n < n1; ++n)
    for (int t = 0; t < s.T; ++t)
      std::memcpy(to + (int64_t(t) * B + n) * w, from + (n * s.seq_rows() + s.at(L, n, t)) * w,
                  size_t(w) * sizeof(float));
}

void to_batch_major(const Shape& s, const int32_t* L, const float* from, int B, int w, float* to) {
  for (int n = 0; n < B; ++n)
    for (int t = 0; t < s.T; ++t)
      std::memcpy(to + (n * s.seq_rows() + s.at(L, n, t)) * w, from + (int64_t(t) * B + n) * w,
                  size_t(w) * sizeof(float));
}

// out[0:n] = column sums of a (rows, n) with row stride ld.
void column_sums(const float* a, int64_t rows, int n, int64_t ld, float* out) {
  std::fill(out, out + n, 0.0f);
  for (int64_t r = 0; r < rows; ++r) add_row(a + r * ld, out, n);
}

// Sequences n0..n1 of a batch, run by one thread: the equations of cells.h, the GEMMs single-threaded. Its
// arrays are the batch's, offset to row n0 (they are batch-major, so a slab of sequences is contiguous);
// its workspace and dgates are blocks of its own, (T, B_slab, ·) time-major (dgates' rows padded(G·p) apart).
class Slab {
 public:
  explicit Slab(const Shape& s);  // s.B: the slab's sequences
  size_t workspace_bytes() const;
  void forward(const Inputs& in, float* a, float* aT, float* cT, void* ws) const;
  void backward(const Inputs& in, const void* ws, const float* da, const float* daT, const float* dcT,
                const Grads& g, float* dgates) const;

 private:
  bool lstm_in_registers() const;
  void lstm_forward_in_registers(const Inputs& in, float* a, float* aT, float* cT, void* ws) const;
  size_t train_scratch_bytes() const;
  size_t infer_scratch_bytes() const;
  size_t backward_scratch_bytes() const;
  size_t gate_floats() const;
  size_t extra_floats() const;
  Shape s_;
  int G_, P_;  // P_ threads split each step (1: the slab runs on one thread)
};

// The slabs a batch is split into: one per thread, at least 8 sequences each; or, where a step is large
// (split_steps), one slab of the whole batch whose every step is split over the threads: there one product
// split by columns runs faster than two products of half the rows, and a meeting of the threads per step
// costs little against it.
bool split_steps(const Shape& s) {
  return large_steps(s) && double(s.G()) * s.p * s.p >= 5e5;  // (a short step does not pay for a meeting)
}

std::vector<std::pair<int, int>> slabs(const Shape& s) {
  const int n = split_steps(s) ? 1 : std::max(1, std::min(Team::get().size(), s.B / 8));
  std::vector<std::pair<int, int>> out;
  for (int i = 0; i < n; ++i) out.emplace_back(int(int64_t(s.B) * i / n), int(int64_t(s.B) * (i + 1) / n));
  return out;
}

}  // namespace

bool kernel_applies(const Shape& s) {
  const bool cell_ok = s.cell == kElman || s.cell == kGruResetAfter || s.cell == kLstm;
  return cell_ok && s.B > 0 && s.T > 0 && s.k > 0 && s.p > 0;
}

Slab::Slab(const Shape& s) : s_(s), G_(s.G()), P_(split_steps(s) ? Team::get().size() : 1) {}

size_t Slab::gate_floats() const { return s_.cell == kElman ? 0 : size_t(s_.B) * s_.T * G_ * s_.p; }
size_t Slab::extra_floats() const { return s_.cell == kElman ? 0 : size_t(s_.B) * s_.T * s_.p; }

size_t Slab::workspace_bytes() const {
  return (size_t(s_.B) * s_.T * s_.p + gate_floats() + extra_floats()) * sizeof(float);  // a_t, gates, extra
}

size_t Slab::train_scratch_bytes() const {
  const size_t step = s_.cell == kGruResetAfter ? size_t(s_.B) * G_ * s_.p : 0;  // U_a a_{t-1}
  return (size_t(s_.B) * s_.T * s_.k + step) * sizeof(float);                   // x time-major, step
}

size_t Slab::infer_scratch_bytes() const { return workspace_bytes() + train_scratch_bytes(); }

size_t Slab::backward_scratch_bytes() const {
  const size_t TB = size_t(s_.B) * s_.T, Gp = size_t(G_) * s_.p;
  const size_t U_rows = padded(s_.p) != s_.p ? Gp * padded(s_.p) : 0;
  size_t n = TB * s_.k + 2 * size_t(s_.B) * s_.p + U_rows;          // x time-major, da, dc, U_a
  if (s_.cell == kGruResetAfter) n += TB * padded(Gp);                // the gate gradients as U_a sees them
  return n * sizeof(float);
}

// Inside, rows are time-major (step t of sequence n is row t·B + n), so that a step's B rows are one
// contiguous matrix; x comes in and a, dx go out batch-major.
void Slab::forward(const Inputs& in, float* a, float* aT, float* cT, void* ws) const {
  const int B = s_.B, T = s_.T, k = s_.k, p = s_.p, Gp = G_ * p;
  const int64_t TB = int64_t(T) * B;
  const bool elman = s_.cell == kElman;
  if (lstm_in_registers()) {
    lstm_forward_in_registers(in, a, aT, cT, ws);
    return;
  }
  Scratch scratch((ws ? train_scratch_bytes() : infer_scratch_bytes()) / sizeof(float));
  float* a_tm = ws ? static_cast<float*>(ws) : scratch.data();  // (T, B, p): every a_t
  float* gates = elman ? a_tm : a_tm + TB * p;                  // (T, B, G·p): W_a x_t, then the gate values
  float* extra = elman ? nullptr : gates + TB * Gp;             // (T, B, p): GRU un, LSTM c_t
  float* x_tm = scratch.data() + (ws ? 0 : workspace_bytes() / sizeof(float));
  float* ua = x_tm + TB * k;  // (B, G·p): GRU U_a a_{t-1}
  Team::get().run(P_, [&](int part) {
    to_time_major(s_, in.lengths, in.x, B * part / P_, B * (part + 1) / P_, B, k, x_tm);
  });
  gemm_split(P_, 'N', 'T', TB, Gp, k, x_tm, k, in.W, k, 0.0f, gates, Gp);  // W_a x_t for every t at once
  for (int i = 0; i < T; ++i) {
    const int t = s_.reverse ? T - 1 - i : i;
    const int tp = s_.reverse ? t + 1 : t - 1;  // the previous step
    const float* a_prev = i == 0 ? in.a0 : a_tm + int64_t(tp) * B * p;
    float* s_t = gates + int64_t(t) * B * Gp;  // W_a x_t, then (+ U_a a_{t-1}) the gates
    if (s_.cell == kGruResetAfter) {
      gemm_split(P_, 'N', 'T', B, Gp, p, a_prev, p, in.U, p, 0.0f, ua, Gp);
    } else {
      gemm_split(P_, 'N', 'T', B, Gp, p, a_prev, p, in.U, p, 1.0f, s_t, Gp);  // + U_a a_{t-1}
    }
    each_split(P_, B, [&](int n) {
      const int64_t row = int64_t(t) * B + n;
      float* a_t = a_tm + row * p;
      switch (s_.cell) {
        case kElman:
          elman_row(a_t, in.b, p, s_.act);
          break;
        case kGruResetAfter:
          gru_row(s_t + int64_t(n) * Gp, ua + int64_t(n) * Gp, in.b, in.c_n, a_prev + int64_t(n) * p,
                  extra + row * p, a_t, p);
          break;
        case kLstm: {
          const float* c_prev = i == 0 ? in.c0 + int64_t(n) * p : extra + (int64_t(tp) * B + n) * p;
          const bool pad = in.lengths != nullptr && t >= in.lengths[n];
          lstm_row(s_t + int64_t(n) * Gp, in.b, c_prev, extra + row * p, a_t, p, pad);
          break;
        }
      }
      if (a) std::memcpy(a + (n * s_.seq_rows() + s_.at(in.lengths, n, t)) * p, a_t, size_t(p) * sizeof(float));
    });
  }
  const int64_t last = int64_t(s_.reverse ? 0 : T - 1) * B * p;
  std::memcpy(aT, a_tm + last, size_t(B) * p * sizeof(float));
  if (s_.cell == kLstm) std::memcpy(cT, extra + last, size_t(B) * p * sizeof(float));
}

// The LSTM where its steps are split over threads: by units, each step's gates in the GEMM's registers
// (lstm_registers.h) on U_a packed once per call, where the CPU runs AVX-512 or AVX2.
bool Slab::lstm_in_registers() const {
  return s_.cell == kLstm && P_ > 1 && s_.p % 16 == 0 && lstm_registers_width() > 0;
}

// Where it trains (ws), every a_t, c_t and the gate values go to the workspace, time-major, as the backward
// reads them. Without gradient, a_t and c_t go to two blocks taken in turn (each written where the step
// before read, still in cache), and where x is one (B·T, k) matrix, W_a x_t stays batch-major (step t of
// sequence n at row n·T + t) with x read where it is.
void Slab::lstm_forward_in_registers(const Inputs& in, float* a, float* aT, float* cT, void* ws) const {
  const int B = s_.B, T = s_.T, k = s_.k, p = s_.p, Gp = G_ * p;  // G_ = 4: i, f, g, o
  const int64_t TB = int64_t(T) * B, Bp = int64_t(B) * p;
  const bool keep_gates = ws != nullptr, batch_major = !keep_gates && s_.seq_rows() == T;
  const int64_t blocks = keep_gates ? T : 2;  // of a_t and of c_t
  Scratch scratch((keep_gates ? 0 : 2 * blocks * Bp + TB * Gp) + (batch_major ? 0 : TB * k));
  float* a_tm = keep_gates ? static_cast<float*>(ws) : scratch.data();  // (blocks, B, p): a_t
  float* gates = a_tm + blocks * Bp;                                    // (T·B, 4p): W_a x_t, then i, f, g, o
  float* extra = gates + TB * Gp;                                       // (blocks, B, p): c_t
  float* x_tm = keep_gates ? scratch.data() : extra + blocks * Bp;      // (T, B, k)
  if (!batch_major) {
    Team::get().run(P_, [&](int part) {
      to_time_major(s_, in.lengths, in.x, B * part / P_, B * (part + 1) / P_, B, k, x_tm);
    });
  }
  gemm_split(P_, 'N', 'T', TB, Gp, k, batch_major ? in.x : x_tm, k, in.W, k, 0.0f, gates, Gp);
  Scratch packed(size_t(Gp) * p);
  float* panels = packed.data();  // (64-byte aligned, as the panels' loads need)
  const int W = lstm_registers_width();
  auto at = [&](int t) { return int64_t(keep_gates ? t : t % 2) * Bp; };  // a_t's and c_t's block
  std::vector<float> keeps(size_t(P_) * B, 1.0f);
  StepParts steps(T, P_);
  Team::get().run(P_, [&](int home) {
    steps.run(home, [&](int i, int part) {
      const auto [u0, u1] = share(p, part, P_);
      if (u1 <= u0) return;
      if (i == 0) pack_lstm_panels(in.U, p, W, int(u0 / W), int(u1 / W), panels);  // in this core's cache
      const int t = s_.reverse ? T - 1 - i : i;
      const int tp = s_.reverse ? t + 1 : t - 1;  // the previous step
      float* keep = keeps.data() + int64_t(part) * B;
      if (in.lengths)
        for (int n = 0; n < B; ++n) keep[n] = t >= in.lengths[n] ? 0.0f : 1.0f;
      const LstmStep step{.B = B,
                          .p = p,
                          .a_prev = i == 0 ? in.a0 : a_tm + at(tp),
                          .panels = panels,
                          .wx = gates + int64_t(t) * (batch_major ? 1 : B) * Gp,
                          .wx_ld = int64_t(batch_major ? T : 1) * Gp,
                          .keep_gates = keep_gates,
                          .b = in.b,
                          .c_prev = i == 0 ? in.c0 : extra + at(tp),
                          .c = extra + at(t),
                          .a = a_tm + at(t),
                          .out = a ? a + int64_t(t) * p : nullptr,
                          .out_ld = s_.seq_rows() * p,
                          .keep = keep,
                          .units_last_first = i % 2 == 1};
      lstm_step_units(step, int(u0), int(u1));
    });
  });
  const int64_t last = at(s_.reverse ? 0 : T - 1);
  std::memcpy(aT, a_tm + last, size_t(B) * p * sizeof(float));
  std::memcpy(cT, extra + last, size_t(B) * p * sizeof(float));
}

void Slab::backward(const Inputs& in, const void* ws, const float* da, const float* daT, const float* dcT,
                    const Grads& g, float* dgates) const {
  const int B = s_.B, T = s_.T, k = s_.k, p = s_.p, Gp = G_ * p;
  const int64_t TB = int64_t(T) * B, ldg = padded(Gp), ldu = padded(p);
  const bool gru = s_.cell == kGruResetAfter, lstm = s_.cell == kLstm;
  const float* a_tm = static_cast<const float*>(ws);
  const float* gates = a_tm + TB * p;
  const float* extra = gates + gate_floats();
  Scratch scratch(backward_scratch_bytes() / sizeof(float));
  float* x_tm = scratch.data();                    // (T, B, k)
  float* da_carry = x_tm + TB * k;                 // (B, p): the gradient wrt a_t carried from the step after
  float* dc = da_carry + int64_t(B) * p;           // (B, p): LSTM, wrt c_t
  float* U_rows = dc + int64_t(B) * p;             // (G·p, p): U_a with its rows ldu apart, where ldu != p
  float* dG = gru ? U_rows + (ldu != p ? Gp * ldu : 0) : dgates;  // (T, B, G·p), rows ldg apart: gate
                                                                  // gradients as U_a sees them
  std::memcpy(da_carry, daT, size_t(B) * p * sizeof(float));
  if (lstm) std::memcpy(dc, dcT, size_t(B) * p * sizeof(float));
  if (ldu != p)
    each_split(P_, Gp, [&](int r) { std::memcpy(U_rows + r * ldu, in.U + int64_t(r) * p, size_t(p) * sizeof(float)); });
  const float* U = ldu != p ? U_rows : in.U;
  const int first = s_.reverse ? T - 1 : 0;  // the forward's first step
  for (int i = 0; i < T; ++i) {
    const int t = s_.reverse ? i : T - 1 - i;  // the forward's steps, last first
    const int tp = s_.reverse ? t + 1 : t - 1;
    const float* a_prev = t == first ? in.a0 : a_tm + int64_t(tp) * B * p;
    each_split(P_, B, [&](int n) {
      const int64_t row = int64_t(t) * B + n;
      const float* da_out = da + (n * s_.seq_rows() + s_.at(in.lengths, n, t)) * p;
      float* carry = da_carry + int64_t(n) * p;
      switch (s_.cell) {
        case kElman:
          elman_row_back(a_tm + row * p, da_out, carry, dG + row * ldg, p, s_.act);
          break;
        case kGruResetAfter:
          gru_row_back(gates + row * Gp, extra + row * p, a_prev + int64_t(n) * p, da_out, carry, dG + row * ldg,
                       dgates + row * ldg, p);
          break;
        case kLstm: {
          const float* c_prev = t == first ? in.c0 + int64_t(n) * p : extra + (int64_t(tp) * B + n) * p;
          lstm_row_back(gates + row * Gp, extra + row * p, c_prev, da_out, carry, dc + int64_t(n) * p,
                        dG + row * ldg, p);
          break;
        }
      }
    });
    // da_carry = (GRU: (da_out + da_carry) ⊙ z +) dG_t U_a, the gradient wrt a_{t-1}
    gemm_split(P_, 'N', 'N', B, p, Gp, dG + int64_t(t) * B * ldg, ldg, U, ldu, gru ? 1.0f : 0.0f, da_carry, p);
  }
  std::memcpy(g.da0, da_carry, size_t(B) * p * sizeof(float));
  if (lstm) std::memcpy(g.dc0, dc, size_t(B) * p * sizeof(float));

  to_time_major(s_, in.lengths, in.x, 0, B, B, k, x_tm);
  // The weight gradients as their transposes, then turned: dU_aᵀ = Σ_t a_{t-1}ᵀ dG_t, a_0 at the first step
  // and the kept states at the others; dW_aᵀ = Σ_t x_tᵀ dgates_t. (oneDNN's AVX2 sgemm runs a weight
  // gradient dGᵀ v (G·p, n) faster as (vᵀ dG)ᵀ: benchmarks/README.md.)
  Scratch transposed(size_t(Gp) * std::max(p, k));
  gemm_split(P_, 'T', 'N', p, Gp, B, in.a0, p, dG + int64_t(first) * B * ldg, ldg, 0.0f, transposed.data(), Gp);
  if (T > 1) {
    const float* dG_rest = s_.reverse ? dG : dG + int64_t(B) * ldg;
    const float* a_rest = s_.reverse ? a_tm + int64_t(B) * p : a_tm;
    gemm_split(P_, 'T', 'N', p, Gp, TB - B, a_rest, p, dG_rest, ldg, 1.0f, transposed.data(), Gp);
  }
  transpose_split(P_, transposed.data(), p, Gp, g.dU);
  gemm_split(P_, 'T', 'N', k, Gp, TB, x_tm, k, dgates, ldg, 0.0f, transposed.data(), Gp);
  transpose_split(P_, transposed.data(), k, Gp, g.dW);
  column_sums(dgates, TB, Gp, ldg, g.db);
  if (gru) column_sums(dG + 2 * p, TB, p, ldg, g.dc_n);  // c_n sits inside r ⊙ (U_n a + c_n)
}

namespace {

// dx (B, T, k) = dgates W_a (G·p, k): the input's gradient from the gates' gradients, one (T, B_slab, G·p) block
// of dgates per slab, rows padded(G·p) apart.
void input_gradient(const Shape& s, const int32_t* lengths, const float* dgates, const float* W, float* dx) {
  const int T = s.T, k = s.k, Gp = s.G() * s.p;
  const auto parts = slabs(s);
  const int P = split_steps(s) ? Team::get().size() : 1;
  Team::get().run(int(parts.size()), [&](int i) {
    const auto [n0, n1] = parts[i];
    const int Bs = n1 - n0;
    Scratch scratch(size_t(T) * Bs * k);
    // dx_t = dgates_t W_a over the slab's (T, B_slab) rows, then back to batch-major
    gemm_split(P, 'N', 'N', int64_t(T) * Bs, k, Gp, dgates + int64_t(T) * n0 * padded(Gp), padded(Gp), W, k, 0.0f,
               scratch.data(), k);
    to_batch_major(s, lengths ? lengths + n0 : nullptr, scratch.data(), Bs, k, dx + n0 * s.seq_rows() * k);
  });
}

Shape slab_shape(const Shape& s, int n0, int n1) {
  Shape t = s;
  t.B = n1 - n0;
  return t;
}

Inputs from_row(const Inputs& in, const Shape& s, int n0) {  // the inputs of sequences n0, n0 + 1, ...
  Inputs o = in;
  o.x = in.x + n0 * s.seq_rows() * s.k;
  o.a0 = in.a0 + int64_t(n0) * s.p;
  if (in.c0) o.c0 = in.c0 + int64_t(n0) * s.p;
  if (in.lengths) o.lengths = in.lengths + n0;
  return o;
}

}  // namespace

Kernel::Kernel(const Shape& s) : s_(s), G_(s.G()) {
  if (!kernel_applies(s)) throw std::invalid_argument("the hand-written kernel does not run this cell");
  if (s.within && (s.cell == kLstm || s.reverse || s.T_all > 0))
    throw std::invalid_argument("within lengths runs Elman and the GRU, forwards, whole sequences");
}

// The workspace is linear in B: the whole batch's is the slabs' one after another, and slab [n0, n1)'s
// starts where the first n0 sequences' ends.
size_t Kernel::workspace_bytes() const { return Slab(s_).workspace_bytes(); }

void Kernel::forward(const Inputs& in, float* a, float* aT, float* cT, void* ws) const {
  const auto parts = slabs(s_);
  const int64_t T = s_.seq_rows(), p = s_.p;
  Team::get().run(int(parts.size()), [&](int i) {
    const auto [n0, n1] = parts[i];
    Slab(slab_shape(s_, n0, n1))
        .forward(from_row(in, s_, n0), a ? a + n0 * T * p : nullptr, aT + n0 * p, cT ? cT + n0 * p : nullptr,
                 ws ? static_cast<char*>(ws) + Slab(slab_shape(s_, 0, n0)).workspace_bytes() : nullptr);
  });
}

void Kernel::backward(const Inputs& in, const void* ws, const float* da, const float* daT, const float* dcT,
                      const Grads& g) const {
  const auto parts = slabs(s_);
  const int P = int(parts.size());
  const int64_t T = s_.T, p = s_.p, Gp = int64_t(G_) * p, ldg = padded(Gp);  // (dgates: T rows per sequence)
  // The first slab writes the weight gradients, the others their own sums, added at the end.
  const size_t sizes[4] = {size_t(Gp * s_.k), size_t(Gp * p), size_t(Gp), g.dc_n ? size_t(p) : 0};
  const size_t each = sizes[0] + sizes[1] + sizes[2] + sizes[3];
  Scratch partial(std::max<size_t>(1, (P - 1) * each));
  // the gates' gradients as W_a sees them: one (T, B_slab, G·p) block per slab, rows ldg apart, in the pool
  // rather than a result buffer of XLA's (fresh memory at every call, faulted in page by page)
  Scratch dgates(size_t(T) * s_.B * ldg);
  auto grads_of = [&](int i) {
    Grads gi{nullptr, g.da0 + parts[i].first * p, g.dc0 ? g.dc0 + parts[i].first * p : nullptr,
             g.dW, g.dU, g.db, g.dc_n};
    if (i > 0) {
      float* at = partial.data() + (i - 1) * each;
      gi.dW = at, gi.dU = at + sizes[0], gi.db = at + sizes[0] + sizes[1];
      gi.dc_n = g.dc_n ? at + sizes[0] + sizes[1] + sizes[2] : nullptr;
    }
    return gi;
  };
  Team::get().run(P, [&](int i) {
    const auto [n0, n1] = parts[i];
    Slab(slab_shape(s_, n0, n1))
        .backward(from_row(in, s_, n0), static_cast<const char*>(ws) + Slab(slab_shape(s_, 0, n0)).workspace_bytes(),
                  da + n0 * s_.seq_rows() * p, daT + n0 * p, dcT ? dcT + n0 * p : nullptr, grads_of(i),
                  dgates.data() + T * n0 * ldg);
  });
  if (g.dx) input_gradient(s_, in.lengths, dgates.data(), in.W, g.dx);
  if (P == 1) return;
  Team::get().run(P, [&](int i) {  // each thread adds up its share of every array
    const Grads first = grads_of(0);
    float* outs[4] = {first.dW, first.dU, first.db, first.dc_n};
    for (int a = 0; a < 4; ++a) {
      const size_t lo = sizes[a] * i / P, hi = sizes[a] * (i + 1) / P;
      size_t off = 0;
      for (int b = 0; b < a; ++b) off += sizes[b];
      for (int j = 1; j < P; ++j) add_row(partial.data() + (j - 1) * each + off + lo, outs[a] + lo, int(hi - lo));
    }
  });
}

size_t scratch_bytes() { return Scratch::bytes_held(); }

}  // namespace rnnlab
