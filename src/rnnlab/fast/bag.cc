// The subword part of x_t (models.TextClassifier.embed, data/subwords.py) as XLA FFI handlers: at each of
// n positions, the mean of H's rows of the token's hashed n-grams, and H's gradient back from those means.
//
//   forward:  H (N, k), g (n, G) int32 -> x_H (n, k)
//             x_H[i] = (1 / max(n_i, 1)) Σ_s H[g[i, s]]   over the slots s with 0 < g[i, s] < N,
//             n_i = #{s : g[i, s] > 0}                     (0: an empty slot; a row >= N counts, reads 0)
//   backward: dx_H (n, k), g (n, G) int32 -> dH (N, k)
//             dH[r] = Σ_{i, s : g[i, s] = r} dx_H[i] / max(n_i, 1)   (row 0 and empty slots: nothing)
//
// The gather-and-reduce JAX writes for the same equation materialises (n, G, k) and scatters it back; here
// each slot is one row added in place, so both directions cost the slots that hold an n-gram.
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace rnnlab {
namespace {

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using Out = ffi::ResultBuffer<ffi::F32>;

// n_i: the slots of a position that hold an n-gram, at least 1 (a position with none divides nothing).
inline float slots_of(const int32_t* g_i, int64_t G) {
  int64_t n = 0;
  for (int64_t s = 0; s < G; ++s) n += g_i[s] > 0;
  return float(n > 0 ? n : 1);
}

ffi::Error BagForward(F32 H, S32 g, Out x_H) {
  const int64_t N = H.dimensions()[0], k = H.dimensions()[1];
  const int64_t n = k ? x_H->element_count() / k : 0, G = n ? g.element_count() / n : 0;
  const float* H_ = H.typed_data();
  const int32_t* g_ = g.typed_data();
  float* out = x_H->typed_data();
  for (int64_t i = 0; i < n; ++i) {  // every row written, the rows of positions with no slot (G = 0) too
    const int32_t* g_i = g_ + i * G;
    float* x_i = out + i * k;
    for (int64_t j = 0; j < k; ++j) x_i[j] = 0.0f;
    for (int64_t s = 0; s < G; ++s) {
      const int32_t r = g_i[s];
      if (r <= 0 || r >= N) continue;
      const float* H_r = H_ + int64_t(r) * k;
#pragma omp simd
      for (int64_t j = 0; j < k; ++j) x_i[j] += H_r[j];
    }
    const float n_i = slots_of(g_i, G);
#pragma omp simd
    for (int64_t j = 0; j < k; ++j) x_i[j] /= n_i;
  }
  return ffi::Error::Success();
}

ffi::Error BagBackward(F32 dx_H, S32 g, Out dH) {
  const int64_t N = dH->dimensions()[0], k = dH->dimensions()[1];
  const int64_t n = k ? dx_H.element_count() / k : 0, G = n ? g.element_count() / n : 0;
  const float* dx = dx_H.typed_data();
  const int32_t* g_ = g.typed_data();
  float* dH_ = dH->typed_data();
  std::memset(dH_, 0, sizeof(float) * size_t(N) * size_t(k));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* g_i = g_ + i * G;
    const float n_i = slots_of(g_i, G);
    const float* dx_i = dx + i * k;
    for (int64_t s = 0; s < G; ++s) {
      const int32_t r = g_i[s];
      if (r <= 0 || r >= N) continue;
      float* dH_r = dH_ + int64_t(r) * k;
#pragma omp simd
      for (int64_t j = 0; j < k; ++j) dH_r[j] += dx_i[j] / n_i;
    }
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace rnnlab

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabBagForward, rnnlab::BagForward,
                              ffi::Ffi::Bind()
                                  .Arg<rnnlab::F32>()    // H (N, k)
                                  .Arg<rnnlab::S32>()    // g (n, G)
                                  .Ret<rnnlab::F32>());  // x_H (n, k)

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabBagBackward, rnnlab::BagBackward,
                              ffi::Ffi::Bind()
                                  .Arg<rnnlab::F32>()    // dx_H (n, k)
                                  .Arg<rnnlab::S32>()    // g (n, G)
                                  .Ret<rnnlab::F32>());  // dH (N, k)
