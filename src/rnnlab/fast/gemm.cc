#include "gemm.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "oneapi/dnnl/dnnl.h"
#include "team.h"

namespace rnnlab {

void gemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  if (dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc) != dnnl_success)
    throw std::runtime_error("sgemm failed at M=" + std::to_string(M) + " N=" + std::to_string(N) +
                             " K=" + std::to_string(K));
}

std::pair<int64_t, int64_t> share(int64_t n, int j, int P) {
  auto at = [&](int i) { return i == P ? n : std::min(n, (n * i / P) / 16 * 16); };
  return {at(j), at(j + 1)};
}

int64_t padded(int64_t n) { return n % 256 == 0 ? n + 16 : n; }

void gemm_split(int P, char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const bool by_rows = M >= 2 * N;
  Team::get().run(P, [&](int j) {
    if (by_rows) {
      const auto [m0, m1] = share(M, j, P);
      if (m1 > m0) gemm(ta, tb, m1 - m0, N, K, ta == 'T' ? A + m0 : A + m0 * lda, lda, B, ldb, beta, C + m0 * ldc, ldc);
    } else {
      const auto [n0, n1] = share(N, j, P);
      if (n1 > n0) gemm(ta, tb, M, n1 - n0, K, A, lda, tb == 'T' ? B + n0 * ldb : B + n0, ldb, beta, C + n0, ldc);
    }
  });
}

void transpose_split(int P, const float* from, int64_t rows, int64_t cols, float* to) {
  constexpr int64_t kTile = 16;
  Team::get().run(P, [&](int j) {
    const auto [c0, c1] = share(cols, j, P);
    for (int64_t cb = c0; cb < c1; cb += kTile)
      for (int64_t rb = 0; rb < rows; rb += kTile)
        for (int64_t c = cb; c < std::min(cb + kTile, c1); ++c)
          for (int64_t r = rb; r < std::min(rb + kTile, rows); ++r) to[c * rows + r] = from[r * cols + c];
  });
}

}  // namespace rnnlab
