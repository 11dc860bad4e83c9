// One recurrent layer written out by hand: the input projection and the weight gradients as single GEMMs
// over all B·T rows, and a loop over t whose body is one (B, p) × (p, G·p) GEMM (gemm.h) and one pass
// over the gates (the row functions of cells.h). Runs Elman (tanh, ReLU, sigmoid), the GRU with
// reset_after and the LSTM, masked or not; the GRU without reset_after runs on oneDNN (plan.h).
//
// Threads (team.h): the batch is split into slabs of sequences, one per thread of the kernel's own team,
// and each thread runs its slab through all T steps alone (sequences are independent); the slabs' weight
// gradients are added at the end. Where a step is large, one slab holds the whole batch and each step's
// GEMM and gate pass are split over the threads instead (the LSTM's forward: by units, its gates in the
// GEMM's registers, lstm_registers.h). Callers see batch-major arrays; inside a slab, rows are time-major
// (step t of sequence n is row t·B + n), so that a step's rows are one contiguous matrix. A Kernel holds
// only its shape: inputs, outputs and the workspace are XLA's buffers, temporaries come from a pool kept
// between calls (scratch.h). Long sequences in pieces: pieces.h.
//
// Buffers (G = gates(cell); Inputs and Grads in cells.h):
//   in     x (B, T, k), a0 (B, p), c0 (B, p) LSTM, W_a (G·p, k), U_a (G·p, p), b_a (G·p,), c_n (p,) GRU,
//          lengths (B,) masked LSTM
//   out    a (B, T, p) every a_t (may be null), aT (B, p) a_T, cT (B, p) c_T (LSTM)
//   ws     the workspace the forward keeps for the backward, workspace_bytes(), one (T, B_slab, ·) block
//          per slab, time-major:
//            every cell  a_t (p); f_a'(s) is read from it for Elman (tanh: 1 - a², sigmoid: a(1 - a), ReLU: a > 0)
//            GRU         r, z, n (3p) and un = U_n a_{t-1} + c_n (p)
//            LSTM        i, f, g, o (4p) and c_t (p)
//   cotangents  da (B, T, p), daT (B, p), dcT (B, p) LSTM
//   g      every gradient, each the shape of its input; dx only where g.dx is not null (dx = dgates W_a,
//          one GEMM over the gates' gradients, which the backward keeps in its pool)
#pragma once

#include <cstddef>

#include "cells.h"

namespace rnnlab {

// True where the hand-written kernel runs this shape (every cell but the GRU without reset_after).
bool kernel_applies(const Shape& s);

class Kernel {
 public:
  explicit Kernel(const Shape& s);  // throws std::invalid_argument where !kernel_applies(s)

  size_t workspace_bytes() const;  // kept from forward (training) to backward, in a buffer of XLA's

  // a, aT, cT from the inputs; `ws` non-null keeps what backward needs there.
  void forward(const Inputs& in, float* a, float* aT, float* cT, void* ws) const;
  // Gradients from the cotangents da, daT, dcT: every one in `g`, dx only where g.dx is not null.
  void backward(const Inputs& in, const void* ws, const float* da, const float* daT, const float* dcT,
                const Grads& g) const;

 private:
  Shape s_;
  int G_;
};

// Bytes held by the kernel's pool of temporaries (kept between calls, never returned).
size_t scratch_bytes();

}  // namespace rnnlab
