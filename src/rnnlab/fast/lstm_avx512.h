// The LSTM's step for a range of units with its gate pass in the GEMM's registers (AVX-512), for the kernel's
// forward where a step is split over threads (kernel.cc): each 16 units' four gates are
// accumulated for up to 6 sequences at once from U_a packed per call, then a_t and c_t follow in place,
// so the gates are never written out and the threads meet once per step.
#pragma once

#include <cstdint>

namespace rnnlab {

// True where this CPU runs AVX-512.
bool lstm_avx512_available();

// Packs unit groups g0..g1 of U_a (4p, p): panel g is (p, 64) floats, column 16q + j holding gate q of unit
// 16g + j, so that one row of a panel is a step's four gates for 16 units.
void pack_lstm_panels(const float* U, int p, int g0, int g1, float* panels);

// Units u0..u1 (multiples of 16) of one step for B sequences (rows of p floats):
//   z = W_a x (gx, (B, 4p) rows) + U_a a_prev + b_a;  i, f, o = σ(z_i, z_f, z_o), g = tanh(z_g)
//   c = f ⊙ c_prev + i ⊙ g,  a = o ⊙ tanh(c), written to a and to y (rows y_ld apart)
// keep[n] = 0 on a padding step of sequence n (i = 0, f = 1: c stays), else 1.
// With keep_gates, i, f, g, o are written over gx (the workspace the backward reads).
void lstm_step_units(int B, int p, int u0, int u1, const float* a_prev, const float* panels, float* gx,
                     bool keep_gates, const float* b, const float* c_prev, float* c, float* a, float* y,
                     int64_t y_ld, const float* keep);

}  // namespace rnnlab
