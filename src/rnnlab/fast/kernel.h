// One recurrent layer written out by hand: the input projection and the weight gradients as single GEMMs
// over all B·T rows, and a loop over t whose body is one (B, p) × (p, G·p) GEMM and one vectorised pass
// over the gates. Runs Elman (tanh, ReLU, sigmoid), the GRU with reset_after and the LSTM, masked or not;
// the GRU without reset_after stays on oneDNN (plan.h).
//
// Threads: the batch is split into slabs of sequences, one per thread of the kernel's own team, and each
// thread runs its slab through all T steps alone (sequences are independent); the slabs' weight gradients
// are added at the end. Where a step is large, one slab holds the whole batch and each step's GEMM and
// gate pass are split over the threads instead (the LSTM's forward: by units, its gates in the GEMM's
// registers, lstm_registers.h). Callers see batch-major arrays, x (B, T, k) and y (B, T, p); inside a slab, rows
// are time-major (step t of sequence n is row t·B + n), so that a step's rows are one contiguous matrix.
// A Kernel holds only its shape: inputs, outputs and the workspace are XLA's buffers, temporaries come
// from a pool kept between calls.
//
// What the forward keeps for the backward (the workspace), as (T, B, ·) rows:
//   every cell  a_t (p); f_a'(z) is read from it for Elman (tanh: 1 - a², sigmoid: a(1 - a), ReLU: a > 0)
//   GRU         r, z, n (3p) and U_n a_{t-1} + c_n (p)
//   LSTM        i, f, g, o (4p) and c_t (p)
#pragma once

#include <cstddef>

#include "plan.h"

namespace rnnlab {

// True where the hand-written kernel runs this shape (every cell but the GRU without reset_after).
bool kernel_applies(const Shape& s);

class Kernel {
 public:
  explicit Kernel(const Shape& s);

  size_t workspace_bytes() const;  // kept from forward (training) to backward, in a buffer of XLA's

  // y, hT, cT from the inputs; `ws` non-null keeps what backward needs there.
  void forward(const Inputs& in, float* y, float* hT, float* cT, void* ws) const;
  // Gradients from the cotangents dy (B, T, p), dhT, dcT (LSTM): every one in `g`, dx only where g.dx is
  // not null (dx = dgates W_a, a GEMM over the gates' gradients, which the backward keeps in its pool).
  void backward(const Inputs& in, const void* ws, const float* dy, const float* dhT, const float* dcT,
                const Grads& g) const;

 private:
  Shape s_;
  int G_;
};

// Long sequences in pieces of `chunk` steps (rematerialisation), each a Kernel call on a view of the
// sequences' arrays:
// forward_pieces   y, hT, cT, and the state at the start of every piece in the order they run (from the
//                  end where reversed): starts (n, B, p), and for the LSTM cstarts (n, B, p);
// backward_pieces  every gradient in `g` (dx included), running the pieces last to first, each forward
//                  again from its start keeping its workspace, then backward: memory holds one piece's
//                  workspace, not T steps'.
int piece_count(const Shape& s, int chunk);
void forward_pieces(const Shape& s, int chunk, const Inputs& in, float* y, float* hT, float* cT, float* starts,
                    float* cstarts);
void backward_pieces(const Shape& s, int chunk, const Inputs& in, const float* starts, const float* cstarts,
                     const float* dy, const float* dhT, const float* dcT, const Grads& g);

// Bytes held by the kernel's pool of temporaries (kept between calls, never returned).
size_t scratch_bytes();

}  // namespace rnnlab
