// One timestep of a cell for streaming, as an XLA FFI handler: plain loops, since at B = 1 a step is a
// few matrix-vector products and the cost of calling anything larger would dominate.
#include <cmath>
#include <cstdint>
#include <vector>

#include "plan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace rnnlab {
namespace {

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

// out[0:n] += v * row[0:n]: the weights are given transposed, (k, G·p) and (p, G·p), so that a
// matrix-vector product is a run of these, vectorised over the G·p outputs.
__attribute__((target_clones("avx512f", "avx2", "default")))
void axpy(float v, const float* __restrict row, float* __restrict out, int n) {
#pragma omp simd
  for (int j = 0; j < n; ++j) out[j] += v * row[j];
}

// In place over n values: sigmoid or tanh, vectorised.
__attribute__((target_clones("avx512f", "avx2", "default")))
void sigmoid_n(float* __restrict v, int n) {
#pragma omp simd
  for (int j = 0; j < n; ++j) v[j] = 1.0f / (1.0f + std::exp(-v[j]));
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void tanh_n(float* __restrict v, int n) {
#pragma omp simd
  for (int j = 0; j < n; ++j) v[j] = std::tanh(v[j]);
}


// out[0:cols] = init[0:cols] (or 0) + Mt[0:rows, 0:cols]ᵀ v, Mt of row stride ld; init may be out.
void matvec(const float* Mt, int ld, const float* v, int rows, int cols, const float* init, float* out) {
  if (init != out)
    for (int j = 0; j < cols; ++j) out[j] = init ? init[j] : 0.0f;
  for (int i = 0; i < rows; ++i) axpy(v[i], Mt + size_t(i) * ld, out, cols);
}

// One step for B rows: h_out (and c_out) from x (B, k), h and c (B, p). Returns false for an unknown cell.
// h_out must not alias h.
bool step_rows(int cell, int activation, int B, int k, int p, const float* x, const float* h, const float* c,
               const float* W, const float* U, const float* bias, const float* cn, float* h_out, float* c_out) {
  const int G = cell == kElman ? 1 : cell == kLstm ? 4 : 3, Gp = G * p;
  thread_local std::vector<float> gx, gh, rh;
  gx.resize(Gp);
  gh.resize(Gp);
  rh.resize(p);
  for (int n = 0; n < B; ++n) {
    const float* xn = x + size_t(n) * k;
    const float* hn = h + size_t(n) * p;
    float* out = h_out + size_t(n) * p;
    matvec(W, Gp, xn, k, Gp, bias, gx.data());  // W_a x_t + b_a, every gate
    switch (cell) {
      case kElman: {
        matvec(U, Gp, hn, p, Gp, gx.data(), out);
        if (activation == kRelu) {
          for (int j = 0; j < p; ++j) out[j] = out[j] > 0.0f ? out[j] : 0.0f;
        } else if (activation == kSigmoid) {
          sigmoid_n(out, p);
        } else {
          tanh_n(out, p);
        }
        break;
      }
      case kGruResetAfter: {
        matvec(U, Gp, hn, p, Gp, nullptr, gh.data());
        for (int j = 0; j < 2 * p; ++j) gx[j] += gh[j];
        sigmoid_n(gx.data(), 2 * p);  // r, z
        for (int j = 0; j < p; ++j) gx[2 * p + j] += gx[j] * (gh[2 * p + j] + cn[j]);
        tanh_n(gx.data() + 2 * p, p);  // n
        for (int j = 0; j < p; ++j) out[j] = (1.0f - gx[p + j]) * gx[2 * p + j] + gx[p + j] * hn[j];
        break;
      }
      case kGru: {
        matvec(U, Gp, hn, p, 2 * p, nullptr, gh.data());  // r and z
        for (int j = 0; j < 2 * p; ++j) gx[j] += gh[j];
        sigmoid_n(gx.data(), 2 * p);
        for (int j = 0; j < p; ++j) rh[j] = gx[j] * hn[j];
        matvec(U + 2 * p, Gp, rh.data(), p, p, gx.data() + 2 * p, gx.data() + 2 * p);  // + U_n (r ⊙ a_{t-1})
        tanh_n(gx.data() + 2 * p, p);
        for (int j = 0; j < p; ++j) out[j] = (1.0f - gx[p + j]) * gx[2 * p + j] + gx[p + j] * hn[j];
        break;
      }
      case kLstm: {
        matvec(U, Gp, hn, p, Gp, gx.data(), gx.data());  // every gate's pre-activation
        const float* cprev = c + size_t(n) * p;
        float* cout = c_out + size_t(n) * p;
        sigmoid_n(gx.data(), 2 * p);      // i, f
        tanh_n(gx.data() + 2 * p, p);     // g
        sigmoid_n(gx.data() + 3 * p, p);  // o
        for (int j = 0; j < p; ++j) cout[j] = gx[p + j] * cprev[j] + gx[j] * gx[2 * p + j];
        for (int j = 0; j < p; ++j) rh[j] = cout[j];
        tanh_n(rh.data(), p);
        for (int j = 0; j < p; ++j) out[j] = gx[3 * p + j] * rh[j];
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

ffi::Error Step(F32 x, F32 h, F32 c, F32 Wt, F32 Ut, F32 b, F32 c_n, Out h_out, Out c_out, int32_t cell,
                int32_t activation) {
  const auto xd = x.dimensions();
  const bool ok = step_rows(cell, activation, int(xd[0]), int(xd[1]), int(Ut.dimensions()[0]), x.typed_data(),
                            h.typed_data(), c.typed_data(), Wt.typed_data(), Ut.typed_data(), b.typed_data(),
                            c_n.typed_data(), h_out->typed_data(), c_out->typed_data());
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
extern "C" int rnnlab_step_raw(int cell, int activation, int B, int k, int p, const float* x, const float* h,
                               const float* c, const float* Wt, const float* Ut, const float* b, const float* c_n,
                               float* h_out, float* c_out) {
  return rnnlab::step_rows(cell, activation, B, k, p, x, h, c, Wt, Ut, b, c_n, h_out, c_out) ? 0 : -1;
}
