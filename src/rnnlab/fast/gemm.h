// The kernel's matrix products on oneDNN's sgemm, and their splits over the team's threads (team.h).
// Row-major throughout; an operand flagged 'T' is read transposed.
#pragma once

#include <cstdint>
#include <utility>

namespace rnnlab {

// C (M, N) = A (M, K) · B (K, N) + beta · C, on the calling thread.
void gemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc);

// The same with C split over P threads of the team: by columns (B's rows where tb is 'T', else its
// columns), or, where A is much the larger operand (M >= 2N), by rows (A's columns where ta is 'T', else
// its rows), so that no thread reads all of a large operand.
void gemm_split(int P, char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// to (cols, rows) = from (rows, cols)ᵀ, the rows of `to` split over P threads of the team.
void transpose_split(int P, const float* from, int64_t rows, int64_t cols, float* to);

// Part j of P of 0..n, cut at multiples of 16 (whole vectors).
std::pair<int64_t, int64_t> share(int64_t n, int j, int P);

// A row stride for rows of n floats: n, or n + 16 where n floats are a multiple of 1 KB. Rows a power of
// two apart fall into the same few sets of a core's caches, and oneDNN's sgemm slows down on them
// (benchmarks/README.md has the figures).
int64_t padded(int64_t n);

}  // namespace rnnlab
