// One timestep of a cell for streaming, as an XLA FFI handler and as a plain C function: matrix-vector
// products in plain loops (at B = 1 a step is a few of them, and the cost of calling anything larger would
// dominate), then the cells' row functions (cells.h).
//
//   x_t (B, k), a_{t-1} (B, p), c_{t-1} (B, p) LSTM, W_aᵀ (k, G·p), U_aᵀ (p, G·p), b_a (G·p,), c_n (p,) GRU
//   -> a_t (B, p), c_t (B, p) LSTM
#include <cmath>
#include <cstdint>
#include <vector>

#include "cells.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace rnnlab {
namespace {

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

// out[0:n] += v * row[0:n]: the weights are given transposed, (k, G·p) and (p, G·p), so that a
// matrix-vector product is a run of these, vectorised over the G·p outputs.
RNNLAB_VECTOR void axpy(float v, const float* __restrict row, float* __restrict out, int n) {
#pragma omp simd
  for (int j = 0; j < n; ++j) out[j] += v * row[j];
}

// out[0:cols] = (init ? init : 0) + Mt[0:rows, 0:cols]ᵀ v, Mt of row stride ld; init may be out.
void matvec(const float* Mt, int ld, const float* v, int rows, int cols, const float* init, float* out) {
  if (init != out)
    for (int j = 0; j < cols; ++j) out[j] = init ? init[j] : 0.0f;
  for (int i = 0; i < rows; ++i) axpy(v[i], Mt + size_t(i) * ld, out, cols);
}

// One step for B rows, the equations of cells.h: a_t (and c_t) from x_t (B, k), a_{t-1} and c_{t-1}
// (B, p). Returns false for an unknown cell. a_out must not alias a_prev.
bool step_rows(int cell, int activation, int B, int k, int p, const float* x, const float* a_prev,
               const float* c_prev, const float* W_aT, const float* U_aT, const float* b_a, const float* c_n,
               float* a_out, float* c_out) {
  const int Gp = gates(cell) * p;
  thread_local std::vector<float> wx, ua, un;
  wx.resize(Gp);
  ua.resize(Gp);
  un.resize(p);
  for (int n = 0; n < B; ++n) {
    const float* x_n = x + size_t(n) * k;
    const float* a_prev_n = a_prev + size_t(n) * p;
    float* a_n = a_out + size_t(n) * p;
    matvec(W_aT, Gp, x_n, k, Gp, nullptr, wx.data());  // W_a x_t, every gate
    switch (cell) {
      case kElman:
        matvec(U_aT, Gp, a_prev_n, p, Gp, wx.data(), a_n);  // + U_a a_{t-1}
        elman_row(a_n, b_a, p, activation);
        break;
      case kGruResetAfter:
        matvec(U_aT, Gp, a_prev_n, p, Gp, nullptr, ua.data());
        gru_row(wx.data(), ua.data(), b_a, c_n, a_prev_n, un.data(), a_n, p);
        break;
      case kGru:  // (Cho et al.: U_n reads r ⊙ a_{t-1}, so r and z come first; oneDNN runs it in training)
        matvec(U_aT, Gp, a_prev_n, p, 2 * p, nullptr, ua.data());  // U_r a_{t-1}, U_z a_{t-1}
        gru_cho_gates(wx.data(), ua.data(), b_a, a_prev_n, un.data(), p);
        matvec(U_aT + 2 * p, Gp, un.data(), p, p, wx.data() + 2 * p, wx.data() + 2 * p);  // + U_n (r ⊙ a_{t-1})
        gru_cho_row(wx.data(), b_a, a_prev_n, a_n, p);
        break;
      case kLstm:
        matvec(U_aT, Gp, a_prev_n, p, Gp, wx.data(), wx.data());  // + U_a a_{t-1}
        lstm_row(wx.data(), b_a, c_prev + size_t(n) * p, c_out + size_t(n) * p, a_n, p, false);
        break;
      default:
        return false;
    }
  }
  return true;
}

ffi::Error Step(F32 x, F32 a_prev, F32 c_prev, F32 W_aT, F32 U_aT, F32 b_a, F32 c_n, Out a_out, Out c_out,
                int32_t cell, int32_t activation) {
  const auto xd = x.dimensions();
  const bool ok = step_rows(cell, activation, int(xd[0]), int(xd[1]), int(U_aT.dimensions()[0]), x.typed_data(),
                            a_prev.typed_data(), c_prev.typed_data(), W_aT.typed_data(), U_aT.typed_data(),
                            b_a.typed_data(), c_n.typed_data(), a_out->typed_data(), c_out->typed_data());
  return ok ? ffi::Error::Success() : ffi::Error::InvalidArgument("unsupported cell");
}

}  // namespace
}  // namespace rnnlab

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabStep, rnnlab::Step,
                              ffi::Ffi::Bind()
                                  .Arg<rnnlab::F32>()  // x_t (B, k)
                                  .Arg<rnnlab::F32>()  // a_{t-1} (B, p)
                                  .Arg<rnnlab::F32>()  // c_{t-1} (B, p), LSTM only
                                  .Arg<rnnlab::F32>()  // W_aᵀ (k, G·p)
                                  .Arg<rnnlab::F32>()  // U_aᵀ (p, G·p)
                                  .Arg<rnnlab::F32>()  // b_a (G·p,)
                                  .Arg<rnnlab::F32>()  // c_n (p,), GRU reset_after only
                                  .Ret<rnnlab::F32>()  // a_t (B, p)
                                  .Ret<rnnlab::F32>()  // c_t (B, p), LSTM only
                                  .Attr<int32_t>("cell")
                                  .Attr<int32_t>("act"));

// The same step called straight from Python (rnnlab.fast.Stream, through ctypes), without XLA: weights
// transposed as above, W_aᵀ (k, G·p) and U_aᵀ (p, G·p). Returns 0, or -1 for an unknown cell.
extern "C" int rnnlab_step_raw(int cell, int activation, int B, int k, int p, const float* x,
                               const float* a_prev, const float* c_prev, const float* W_aT, const float* U_aT,
                               const float* b_a, const float* c_n, float* a_out, float* c_out) {
  return rnnlab::step_rows(cell, activation, B, k, p, x, a_prev, c_prev, W_aT, U_aT, b_a, c_n, a_out, c_out) ? 0
                                                                                                             : -1;
}
