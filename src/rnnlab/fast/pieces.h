// Long sequences in pieces of `chunk` steps (rematerialisation), each a Kernel call (kernel.h) on a view
// of the sequences' arrays (Shape::T_all), never a copy. n = piece_count(s, chunk) = ⌈T/chunk⌉.
//
// forward_pieces   from x (B, T, k), a0 and c0 (B, p): a (B, T, p) every a_t (may be null), aT and cT
//                  (B, p), and the state at the start of every piece in the order they run (from the end
//                  where reversed): a_starts (n, B, p), and for the LSTM c_starts (n, B, p).
// backward_pieces  from those starts and the cotangents da (B, T, p), daT and dcT (B, p): every gradient
//                  in `g` (dx included), the pieces last to first, each forward again from its start
//                  keeping its workspace, then backward: memory holds one piece's workspace, not T steps'.
#pragma once

#include "cells.h"

namespace rnnlab {

int piece_count(const Shape& s, int chunk);
void forward_pieces(const Shape& s, int chunk, const Inputs& in, float* a, float* aT, float* cT, float* a_starts,
                    float* c_starts);
void backward_pieces(const Shape& s, int chunk, const Inputs& in, const float* a_starts, const float* c_starts,
                     const float* da, const float* daT, const float* dcT, const Grads& g);

}  // namespace rnnlab
