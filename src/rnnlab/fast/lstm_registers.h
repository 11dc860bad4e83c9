// The LSTM's step for a range of units with its gate pass in the GEMM's registers, for the kernel's
// forward where a step is split over threads (kernel.cc): each W units' four gates are accumulated for a
// few sequences at once from U_a packed per call, then a_t and c_t follow in place, so the gates are never
// written out. One body (lstm_tile.h) built for two instruction sets: AVX-512 (W = 16 units, tiles of 6
// sequences: 24 of its 32 registers accumulate) and AVX2 with FMA (W = 8, tiles of 3: 12 of 16).
#pragma once

#include <cstdint>

namespace rnnlab {

// The vector width in floats (units per panel) on this CPU: 16 (AVX-512), 8 (AVX2 and FMA), or 0 where
// neither runs and the step is not taken here.
int lstm_registers_width();

// Packs unit groups g0..g1 of U_a (4p, p) for vectors of W floats: panel g is (p, 4W) floats, column
// W·q + j holding gate q of unit W·g + j, so that one row of a panel is a step's four gates for W units.
void pack_lstm_panels(const float* U, int p, int W, int g0, int g1, float* panels);

// One step of B sequences (rows of p floats), cells.h's lstm_row in vector registers:
//   s = W_a x_t (wx, B rows of 4p floats, wx_ld apart) + U_a a_prev + b_a;  i, f, o = σ(s_i, s_f, s_o),
//   g = tanh(s_g);  c = f ⊙ c_prev + i ⊙ g,  a = o ⊙ tanh(c), written to a and, where out is not null, to
//   out (the layer's output a_t, rows out_ld apart)
// keep[n] = 0 on a padding step of sequence n (i = 0, f = 1: c stays), else 1.
// With keep_gates, i, f, g, o are written over wx (the workspace the backward reads).
struct LstmStep {
  int B, p;
  const float* a_prev;
  const float* panels;  // U_a as pack_lstm_panels gives it for this CPU's width
  float* wx;
  int64_t wx_ld;
  bool keep_gates;
  const float* b;
  const float* c_prev;
  float* c;
  float* a;
  float* out;
  int64_t out_ld;
  const float* keep;
  // Units walked last to first: taken on every other step, the panels a core used last, still in its cache
  // (U_a's share of a core about fills it), are the first it needs.
  bool units_last_first;
};

// Units u0..u1 (multiples of the width) of the step. out is written around the caches where it is 64-byte
// aligned (it is not read again here, and would push U_a's panels out of this core's cache).
void lstm_step_units(const LstmStep& s, int u0, int u1);

// The same for one instruction set (lstm_step_units calls the one this CPU runs).
void lstm_step_units_avx512(const LstmStep& s, int u0, int u1);
void lstm_step_units_avx2(const LstmStep& s, int u0, int u1);

}  // namespace rnnlab
