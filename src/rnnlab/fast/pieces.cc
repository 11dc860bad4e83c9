#include "pieces.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cells.h"
#include "kernel.h"
#include "scratch.h"

namespace rnnlab {

namespace {

// Piece i, in the order the steps run (from the end where reversed), of `chunk` steps (the last in time
// may be shorter): its first step t0 and its shape, a view into the whole sequences' arrays.
std::pair<int, Shape> piece(const Shape& s, int chunk, int i) {
  const int n = (s.T + chunk - 1) / chunk;
  const int j = s.reverse ? n - 1 - i : i;  // its place in time
  Shape ps = s;
  ps.T = std::min(s.T, (j + 1) * chunk) - j * chunk;
  ps.T_all = int(s.seq_rows());
  return {j * chunk, ps};
}

// The inputs of the piece that starts at step t0 from state (a0, c0); its lengths (masked) are the
// sequences' lengths counted from t0, clipped to 0..T, written to `lengths`.
Inputs piece_inputs(const Inputs& in, const Shape& ps, int t0, const float* a0, const float* c0,
                    int32_t* lengths) {
  Inputs o = in;
  o.x = in.x + int64_t(t0) * ps.k;
  o.a0 = a0;
  o.c0 = c0;
  if (in.lengths) {
    for (int n = 0; n < ps.B; ++n) lengths[n] = std::clamp(in.lengths[n] - t0, 0, ps.T);
    o.lengths = lengths;
  }
  return o;
}

}  // namespace

int piece_count(const Shape& s, int chunk) { return (s.T + chunk - 1) / chunk; }

void forward_pieces(const Shape& s, int chunk, const Inputs& in, float* a, float* aT, float* cT, float* a_starts,
                    float* c_starts) {
  const int n = piece_count(s, chunk);
  const int64_t Bp = int64_t(s.B) * s.p;
  const bool lstm = s.cell == kLstm;
  std::vector<int32_t> lengths(s.B);
  std::memcpy(a_starts, in.a0, size_t(Bp) * sizeof(float));
  if (lstm) std::memcpy(c_starts, in.c0, size_t(Bp) * sizeof(float));
  for (int i = 0; i < n; ++i) {  // piece i starts from a_starts[i] and ends in a_starts[i + 1] (aT after the last)
    const auto [t0, ps] = piece(s, chunk, i);
    const bool last = i == n - 1;
    Kernel(ps).forward(
        piece_inputs(in, ps, t0, a_starts + i * Bp, lstm ? c_starts + i * Bp : nullptr, lengths.data()),
        a ? a + int64_t(t0) * s.p : nullptr, last ? aT : a_starts + (i + 1) * Bp,
        lstm ? (last ? cT : c_starts + (i + 1) * Bp) : nullptr, nullptr);
  }
}

void backward_pieces(const Shape& s, int chunk, const Inputs& in, const float* a_starts, const float* c_starts,
                     const float* da, const float* daT, const float* dcT, const Grads& g) {
  const int n = piece_count(s, chunk);
  const int64_t Bp = int64_t(s.B) * s.p;
  const bool lstm = s.cell == kLstm, gru = s.cell == kGruResetAfter;
  const size_t Gp = size_t(s.G()) * s.p, sizes[4] = {Gp * s.k, Gp * s.p, Gp, gru ? size_t(s.p) : 0};
  const Shape longest = piece(s, chunk, s.reverse ? n - 1 : 0).second;  // the first in time is never short
  Scratch ws(Kernel(longest).workspace_bytes() / sizeof(float) + 1);
  Scratch state(6 * size_t(Bp));  // aT, cT of the forward again (unused); da, dc in and out
  Scratch partial(sizes[0] + sizes[1] + sizes[2] + sizes[3]);
  float *da_T = state.data() + 2 * Bp, *dc_T = da_T + Bp, *da_0 = dc_T + Bp, *dc_0 = da_0 + Bp;  // a piece's
  float* sums[4] = {g.dW, g.dU, g.db, g.dc_n};
  float* parts[4] = {partial.data(), partial.data() + sizes[0], partial.data() + sizes[0] + sizes[1],
                     partial.data() + sizes[0] + sizes[1] + sizes[2]};
  for (int a = 0; a < 4; ++a)
    if (sizes[a]) std::fill(sums[a], sums[a] + sizes[a], 0.0f);
  std::vector<int32_t> lengths(s.B);
  std::memcpy(da_T, daT, size_t(Bp) * sizeof(float));
  if (lstm) std::memcpy(dc_T, dcT, size_t(Bp) * sizeof(float));
  for (int i = n - 1; i >= 0; --i) {  // last piece first: its forward again, keeping the workspace, then back
    const auto [t0, ps] = piece(s, chunk, i);
    const Inputs pin =
        piece_inputs(in, ps, t0, a_starts + i * Bp, lstm ? c_starts + i * Bp : nullptr, lengths.data());
    const Kernel kernel(ps);
    kernel.forward(pin, nullptr, state.data(), lstm ? state.data() + Bp : nullptr, ws.data());
    const Grads gi{g.dx + int64_t(t0) * s.k, da_0, lstm ? dc_0 : nullptr, parts[0], parts[1], parts[2],
                   gru ? parts[3] : nullptr};
    kernel.backward(pin, ws.data(), da + int64_t(t0) * s.p, da_T, lstm ? dc_T : nullptr, gi);
    for (int a = 0; a < 4; ++a)
      if (sizes[a]) add_row(parts[a], sums[a], int(sizes[a]));
    std::swap(da_T, da_0);  // the gradient wrt this piece's start is the one wrt the previous piece's end
    std::swap(dc_T, dc_0);
  }
  std::memcpy(g.da0, da_T, size_t(Bp) * sizeof(float));
  if (lstm) std::memcpy(g.dc0, dc_T, size_t(Bp) * sizeof(float));
}

}  // namespace rnnlab
