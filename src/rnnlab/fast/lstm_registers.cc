// What of the LSTM's in-register step does not depend on the instruction set: the CPU's choice and the
// packing of U_a.
#include "lstm_registers.h"

namespace rnnlab {

int lstm_registers_width() {
  static const int width = __builtin_cpu_supports("avx512f")                                       ? 16
                           : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 8
                                                                                                     : 0;
  return width;
}

void pack_lstm_panels(const float* U, int p, int W, int g0, int g1, float* panels) {
  const int cols = 4 * W;
  for (int g = g0; g < g1; ++g) {
    float* panel = panels + int64_t(g) * p * cols;
    for (int k0 = 0; k0 < p; k0 += 16) {  // a (16 × 4W) block at a time, written while in cache
      const int k1 = k0 + 16 < p ? k0 + 16 : p;
      for (int c = 0; c < cols; ++c) {
        const float* src = U + (int64_t(c / W) * p + W * g + c % W) * p;
        for (int k = k0; k < k1; ++k) panel[int64_t(k) * cols + c] = src[k];
      }
    }
  }
}

void lstm_step_units(const LstmStep& s, int u0, int u1) {
  if (lstm_registers_width() == 16) {
    lstm_step_units_avx512(s, u0, u1);
  } else {
    lstm_step_units_avx2(s, u0, u1);
  }
}

}  // namespace rnnlab
