#include "kernel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lstm_registers.h"
#include "oneapi/dnnl/dnnl.h"

namespace rnnlab {
namespace {

// C (M, N) = A (M, K) · B (K, N) + beta · C, row-major, each operand transposed where its flag is 'T'.
void gemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  if (dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc) != dnnl_success)
    throw std::runtime_error("sgemm failed at M=" + std::to_string(M) + " N=" + std::to_string(N) +
                             " K=" + std::to_string(K));
}

// ---- the equations of one step, for one sequence (one row of p units), vectorised over the units ----
#define VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// Elman: a = f_a(z + b_a), in place; z holds W_a x_t + U_a a_{t-1}.
VECTOR void elman_row(float* __restrict z, const float* __restrict b, int p, int act) {
  if (act == kTanh) {
#pragma omp simd
    for (int j = 0; j < p; ++j) z[j] = std::tanh(z[j] + b[j]);
  } else if (act == kSigmoid) {
#pragma omp simd
    for (int j = 0; j < p; ++j) z[j] = sigmoid(z[j] + b[j]);
  } else {
#pragma omp simd
    for (int j = 0; j < p; ++j) z[j] = std::max(z[j] + b[j], 0.0f);
  }
}

// Elman backward: dz = (dy + da) · f_a'(z), read from a = f_a(z).
VECTOR void elman_row_back(const float* __restrict a, const float* __restrict dy, const float* __restrict da,
                           float* __restrict dz, int p, int act) {
  if (act == kTanh) {
#pragma omp simd
    for (int j = 0; j < p; ++j) dz[j] = (dy[j] + da[j]) * (1.0f - a[j] * a[j]);
  } else if (act == kSigmoid) {
#pragma omp simd
    for (int j = 0; j < p; ++j) dz[j] = (dy[j] + da[j]) * a[j] * (1.0f - a[j]);
  } else {
#pragma omp simd
    for (int j = 0; j < p; ++j) dz[j] = a[j] > 0.0f ? dy[j] + da[j] : 0.0f;
  }
}

// GRU (reset_after), gates r, z, n:
//   r = σ(W_r x + b_r + U_r a)   z = σ(W_z x + b_z + U_z a)   hn = U_n a + c_n
//   n = tanh(W_n x + b_n + r ⊙ hn)   a_t = (1 - z) ⊙ n + z ⊙ a
// g holds W_a x (3p) and becomes r, z, n; gh holds U_a a_{t-1} (3p).
VECTOR void gru_row(float* __restrict g, const float* __restrict gh, const float* __restrict b,
                    const float* __restrict c_n, const float* __restrict a_prev, float* __restrict hn,
                    float* __restrict a, int p) {
  float *r = g, *z = g + p, *n = g + 2 * p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    r[j] = sigmoid(r[j] + b[j] + gh[j]);
    z[j] = sigmoid(z[j] + b[p + j] + gh[p + j]);
    hn[j] = gh[2 * p + j] + c_n[j];
    n[j] = std::tanh(n[j] + b[2 * p + j] + r[j] * hn[j]);
    a[j] = (1.0f - z[j]) * n[j] + z[j] * a_prev[j];
  }
}

// GRU backward. dh = dy + da (the gradient wrt a_t). Writes the gradients of the pre-activations as U_a
// sees them, dgh = (dr, dz, dn ⊙ r), and as W_a sees them, dgx = (dr, dz, dn); da becomes dh ⊙ z, the part
// of the gradient wrt a_{t-1} that does not pass through U_a.
VECTOR void gru_row_back(const float* __restrict g, const float* __restrict hn, const float* __restrict a_prev,
                         const float* __restrict dy, float* __restrict da, float* __restrict dgh,
                         float* __restrict dgx, int p) {
  const float *r = g, *z = g + p, *n = g + 2 * p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    const float dh = dy[j] + da[j];
    const float dn = dh * (1.0f - z[j]) * (1.0f - n[j] * n[j]);
    const float dz = dh * (a_prev[j] - n[j]) * z[j] * (1.0f - z[j]);
    const float dr = dn * hn[j] * r[j] * (1.0f - r[j]);
    dgh[j] = dgx[j] = dr;
    dgh[p + j] = dgx[p + j] = dz;
    dgh[2 * p + j] = dn * r[j];
    dgx[2 * p + j] = dn;
    da[j] = dh * z[j];
  }
}

// LSTM, gates i, f, g, o: c_t = f ⊙ c + i ⊙ g, a_t = o ⊙ tanh(c_t). gt holds W_a x + U_a a_{t-1} (4p) and
// becomes the gates. On a padding step (pad) i = 0 and f = 1, so c stays what it was at the sequence's end.
VECTOR void lstm_row(float* __restrict gt, const float* __restrict b, const float* __restrict c_prev,
                     float* __restrict c, float* __restrict a, int p, bool pad) {
  float *i = gt, *f = gt + p, *g = gt + 2 * p, *o = gt + 3 * p;
  const float keep = pad ? 0.0f : 1.0f;  // arithmetic, not a branch, so that the loop vectorises
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    i[j] = keep * sigmoid(i[j] + b[j]);
    f[j] = keep * sigmoid(f[j] + b[p + j]) + (1.0f - keep);
    g[j] = std::tanh(g[j] + b[2 * p + j]);
    o[j] = sigmoid(o[j] + b[3 * p + j]);
    c[j] = f[j] * c_prev[j] + i[j] * g[j];
    a[j] = o[j] * std::tanh(c[j]);
  }
}

// LSTM backward: dh = dy + da; dc (carried from t+1) becomes the gradient wrt c_{t-1}. i(1-i) and
// f(1-f) are 0 on padding steps, so nothing reaches their weights there.
VECTOR void lstm_row_back(const float* __restrict gt, const float* __restrict c, const float* __restrict c_prev,
                          const float* __restrict dy, const float* __restrict da, float* __restrict dc,
                          float* __restrict dgt, int p) {
  const float *i = gt, *f = gt + p, *g = gt + 2 * p, *o = gt + 3 * p;
#pragma omp simd
  for (int j = 0; j < p; ++j) {
    const float dh = dy[j] + da[j];
    const float tc = std::tanh(c[j]);
    const float dct = dc[j] + dh * o[j] * (1.0f - tc * tc);
    dgt[j] = dct * g[j] * i[j] * (1.0f - i[j]);
    dgt[p + j] = dct * c_prev[j] * f[j] * (1.0f - f[j]);
    dgt[2 * p + j] = dct * i[j] * (1.0f - g[j] * g[j]);
    dgt[3 * p + j] = dh * tc * o[j] * (1.0f - o[j]);
    dc[j] = dct * f[j];
  }
}

// acc[0:n] += row[0:n]
VECTOR void add_row(const float* __restrict row, float* __restrict acc, int n) {
#pragma omp simd
  for (int j = 0; j < n; ++j) acc[j] += row[j];
}

// Steps 0..T of sequences n0..n1 of B, batch-major (B, T_all, w) rows, to time-major (T, B, w), and back.
void to_time_major(const float* from, int n0, int n1, int B, int T, int64_t T_all, int w, float* to) {
  for (int n = n0; n < n1; ++n)
    for (int t = 0; t < T; ++t)
      std::memcpy(to + (int64_t(t) * B + n) * w, from + (n * T_all + t) * w, size_t(w) * sizeof(float));
}

void to_batch_major(const float* from, int B, int T, int64_t T_all, int w, float* to) {
  for (int n = 0; n < B; ++n)
    for (int t = 0; t < T; ++t)
      std::memcpy(to + (n * T_all + t) * w, from + (int64_t(t) * B + n) * w, size_t(w) * sizeof(float));
}

// out[0:n] = column sums of a (rows, n) with row stride ld.
void column_sums(const float* a, int64_t rows, int n, int64_t ld, float* out) {
  std::fill(out, out + n, 0.0f);
  for (int64_t r = 0; r < rows; ++r) add_row(a + r * ld, out, n);
}

// Scratch memory kept between calls: a fresh (page-faulted) buffer of tens of MB per call costs
// milliseconds, so a call takes a free buffer from the pool and gives it back when done. The pool keeps
// at most RNNLAB_SCRATCH_MB megabytes (default 1024); past that, a buffer is freed when its call ends.
class Scratch {
 public:
  explicit Scratch(size_t floats) {
    {
      std::lock_guard<std::mutex> lock(mu());
      auto& free = pool();
      auto fits = free.end();  // the smallest free buffer that is large enough
      for (auto it = free.begin(); it != free.end(); ++it)
        if (it->size >= floats && (fits == free.end() || it->size < fits->size)) fits = it;
      if (fits != free.end()) {
        buf_ = std::move(*fits);
        free.erase(fits);
      }
    }
    if (buf_.size < floats) {  // none in the pool is large enough
      buf_ = Buffer{std::unique_ptr<float[], Free>(aligned_floats(floats)), floats};
      held().fetch_add(floats);
    }
  }
  static size_t bytes_held() { return held().load() * sizeof(float); }
  ~Scratch() {
    std::lock_guard<std::mutex> lock(mu());
    if (bytes_held() > cap_bytes()) {
      held().fetch_sub(buf_.size);  // buf_ is freed with this
      return;
    }
    pool().push_back(std::move(buf_));
  }
  float* data() { return buf_.data.get(); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  struct Buffer {
    std::unique_ptr<float[], Free> data;  // 64-byte aligned: rows of 16·m floats start on cache lines
    size_t size = 0;
  };
  static float* aligned_floats(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<float*>(p);
  }
  static size_t cap_bytes() {
    static const size_t cap = [] {
      const char* env = std::getenv("RNNLAB_SCRATCH_MB");
      return size_t(env ? std::max(0L, std::atol(env)) : 1024L) << 20;
    }();
    return cap;
  }
  static std::atomic<size_t>& held() {  // floats in all the pool's buffers, free or in use
    static std::atomic<size_t> n{0};
    return n;
  }
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<Buffer>& pool() {
    static std::vector<Buffer> p;
    return p;
  }
  Buffer buf_;
};


// Sequences n0..n1 of a batch, run by one thread: the equations above, the GEMMs single-threaded. Its
// arrays are the batch's, offset to row n0 (they are batch-major, so a slab of sequences is contiguous);
// its workspace and dgates are blocks of its own, (T, B_slab, ·) time-major (dgates' rows padded(G·p) apart).
class Slab {
 public:
  explicit Slab(const Shape& s);  // s.B: the slab's sequences
  size_t workspace_bytes() const;
  void forward(const Inputs& in, float* y, float* hT, float* cT, void* ws) const;
  void backward(const Inputs& in, const void* ws, const float* dy, const float* dhT, const float* dcT,
                const Grads& g, float* dgates) const;

 private:
  bool lstm_in_registers() const;
  void lstm_forward_in_registers(const Inputs& in, float* y, float* hT, float* cT, void* ws) const;
  size_t train_scratch_bytes() const;
  size_t infer_scratch_bytes() const;
  size_t backward_scratch_bytes() const;
  size_t gate_floats() const;
  size_t extra_floats() const;
  Shape s_;
  int G_, P_;  // P_ threads split each step (1: the slab runs on one thread)
};

// The kernel's own threads, kept between calls. Sequences are independent, so each thread runs its slab of
// the batch through all T steps alone: threads meet once per call, not at every step (OpenMP barriers at
// every step cost more than the step at tweet sizes, and stall when another library's OpenMP threads, in
// the same runtime, outnumber the cores).
class Team {
 public:
  static Team& get() {
    static Team* team = new Team;  // never destroyed: its threads live as long as the process
    return *team;
  }
  int size() const { return size_; }

  // job(i) for i in 0..n-1 (n <= size()), each taken by whichever thread asks first: the caller starts
  // at once, the team's threads join as they wake, and a thread slow to get a core leaves its share to the
  // others instead of holding them up. Returns when all are done, rethrowing the first error.
  void run(int n, const std::function<void(int)>& job) {
    ThreadScope one(1);  // the GEMMs called from here stay on this thread
    if (n <= 1) {
      job(0);
      return;
    }
    std::lock_guard<std::mutex> one_call_at_a_time(call_);
    const uint64_t run = ++runs_ & 0xffffff;
    job_.store(&job, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    // the run's number, its n and the next job's index in one word: a thread still holding an index of an
    // earlier run sees that run's n with it, never this one's
    next_.store(run << 40 | uint64_t(n) << 32, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_release);
    { std::lock_guard<std::mutex> sleepers_see_it(sleep_); }  // between a sleeper's check and its wait
    wake_.notify_all();
    take();
    while (done_.load(std::memory_order_acquire) < n) std::this_thread::yield();
    for (int i = 0; i < n; ++i) {
      if (errors_[i]) {
        std::exception_ptr first = errors_[i];
        for (auto& e : errors_) e = nullptr;
        std::rethrow_exception(first);
      }
    }
  }

 private:
  Team() {
    size_ = std::max(1, int(std::thread::hardware_concurrency()));
    if (const char* env = std::getenv("RNNLAB_FAST_THREADS")) size_ = std::max(1, std::atoi(env));
    size_ = std::min(size_, 255);  // n fits in 8 bits of next_
    errors_.resize(size_);
    for (int w = 1; w < size_; ++w) std::thread([this] { work(); }).detach();
  }

  void take() {  // runs jobs of the current run until none is left
    for (;;) {
      const uint64_t word = next_.fetch_add(1, std::memory_order_acq_rel);
      const uint32_t i = uint32_t(word), n = uint32_t(word >> 32) & 0xff;
      if (i >= n) return;  // none left, or a run that has ended
      try {  // an index below n holds its run open, so job_ is still that run's
        (*job_.load(std::memory_order_acquire))(int(i));
      } catch (...) {
        errors_[i] = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  void work() {
    ThreadScope one(1);
    uint32_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      // Spin (a forward's backward often follows within microseconds), then poll giving the core to any
      // other runnable thread (XLA's work between the calls), then sleep.
      const auto start = std::chrono::steady_clock::now();
      uint32_t now;
      while ((now = generation_.load(std::memory_order_acquire)) == seen) {
        const auto idle = std::chrono::steady_clock::now() - start;
        if (idle > std::chrono::microseconds(kPollUs)) {
          std::unique_lock<std::mutex> lock(sleep_);  // (not std::atomic::wait: a worker was seen asleep in it
          // after the notify, with GCC 12)
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        } else if (idle > std::chrono::microseconds(kSpinUs)) {
          std::this_thread::yield();
        }
      }
      seen = now;
      take();
    }
  }

  static constexpr int kSpinUs = 50, kPollUs = 500;
  int size_ = 1;
  std::mutex call_;
  uint64_t runs_ = 0;
  std::atomic<const std::function<void(int)>*> job_{nullptr};
  std::atomic<uint64_t> next_{0};
  std::atomic<int> done_{0};
  std::atomic<uint32_t> generation_{0};
  std::mutex sleep_;
  std::condition_variable wake_;
  std::vector<std::exception_ptr> errors_;
};

// The parts of every step of a loop (ranges of units, part j of step i after all of step i-1), shared by
// the jobs of one Team::run: each job runs its own part of every step, so that a core keeps its share of
// U_a in its cache, then takes any part of the step that no job has taken yet, and waits for the step to
// be done before the next. A job that starts late, or never (a thread slow to get a core, a forked child
// without the team's threads), leaves its parts to the others: the loop ends with whatever threads come.
class StepParts {
 public:
  StepParts(int steps, int parts) : steps_(steps), parts_(parts), next_(parts) {}

  // f(i, j) once for every step i and part j; `home`: this job's own part
  template <class F>
  void run(int home, const F& f) {
    for (int i = 0; i < steps_; ++i) {
      for (int spins = 0; done_.load(std::memory_order_acquire) < int64_t(i) * parts_;)
        if (++spins > 1000) {  // (the core may be wanted by the thread being waited for)
          spins = 1000;
          std::this_thread::yield();
        }
      for (int d = 0; d < parts_; ++d) {
        const int j = (home + d) % parts_;
        int step = i;  // part j is taken at step i by whoever moves its next step from i to i + 1
        if (next_[j].compare_exchange_strong(step, i + 1, std::memory_order_acq_rel)) {
          f(i, j);
          done_.fetch_add(1, std::memory_order_release);
        }
      }
    }
  }

 private:
  const int steps_, parts_;
  std::vector<std::atomic<int>> next_;  // per part: the step at which it is next to be taken
  std::atomic<int64_t> done_{0};        // parts done, all steps together
};

// The slabs a batch is split into: one per thread, at least 8 sequences each; or, where a step is large
// (split_steps), one slab of the whole batch whose every step is split over the threads: there one
// (64, 512) × (512, 2048) product split by columns runs about 25 % faster than two products of half the
// rows, and a meeting of the threads per step costs little against it.
bool split_steps(const Shape& s) {
  const double G = s.cell == kElman ? 1 : s.cell == kLstm ? 4 : 3;
  return large_steps(s) && G * s.p * s.p >= 5e5;  // (not Elman at S3: too short a step for a meeting to pay)
}

std::vector<std::pair<int, int>> slabs(const Shape& s) {
  const int n = split_steps(s) ? 1 : std::max(1, std::min(Team::get().size(), s.B / 8));
  std::vector<std::pair<int, int>> out;
  for (int i = 0; i < n; ++i) out.emplace_back(int(int64_t(s.B) * i / n), int(int64_t(s.B) * (i + 1) / n));
  return out;
}

// part j of P of 0..n, cut at multiples of 16 (whole vectors)
std::pair<int64_t, int64_t> share(int64_t n, int j, int P) {
  auto at = [&](int i) { return i == P ? n : std::min(n, (n * i / P) / 16 * 16); };
  return {at(j), at(j + 1)};
}

// A row stride for rows of n floats: n, or n + 16 where n floats are a multiple of 1 KB. Rows a power of two
// apart fall into the same few sets of a core's caches: at S3's LSTM, oneDNN 3.2's AVX2 sgemm ran the
// backward's per-step dG_t U_a (U_a's rows 512 floats apart) at 57 % of its speed on rows 528 apart, and
// dW_a, reading dgates with rows 2048 floats apart, at 52 %.
int64_t padded(int64_t n) { return n % 256 == 0 ? n + 16 : n; }

// gemm with C split over P threads of the team: by columns (B's rows where tb is 'T', else its columns), or,
// where A is much the larger operand (M >= 2N), by rows (A's columns where ta is 'T', else its rows). Each
// thread reads all of the operand that is not split: at dU_a = dGᵀ a over S3's 3200 rows (M 2048, N 512),
// two threads each reading all of dG (26 MB) ran at 64 GFLOP/s, and splitting dG at 150.
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

// to (cols, rows) = from (rows, cols)ᵀ, the rows of `to` split over P threads of the team.
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

// f(n) for n in 0..count, split over P threads of the team.
void each_split(int P, int count, const std::function<void(int)>& f) {
  Team::get().run(P, [&](int j) {
    for (int n = int(int64_t(count) * j / P); n < int(int64_t(count) * (j + 1) / P); ++n) f(n);
  });
}

}  // namespace

bool kernel_applies(const Shape& s) {
  const bool cell_ok = s.cell == kElman || s.cell == kGruResetAfter || s.cell == kLstm;
  return cell_ok && s.B > 0 && s.T > 0 && s.k > 0 && s.p > 0;
}

Slab::Slab(const Shape& s)
    : s_(s), G_(s.cell == kElman ? 1 : s.cell == kLstm ? 4 : 3), P_(split_steps(s) ? Team::get().size() : 1) {}

size_t Slab::gate_floats() const { return s_.cell == kElman ? 0 : size_t(s_.B) * s_.T * G_ * s_.p; }
size_t Slab::extra_floats() const { return s_.cell == kElman ? 0 : size_t(s_.B) * s_.T * s_.p; }

size_t Slab::workspace_bytes() const {
  return (size_t(s_.B) * s_.T * s_.p + gate_floats() + extra_floats()) * sizeof(float);  // a_t, gates, extra
}

size_t Slab::train_scratch_bytes() const {
  const size_t step = s_.cell == kGruResetAfter ? size_t(s_.B) * G_ * s_.p : 0;  // U_a a_{t-1}
  return (size_t(s_.B) * s_.T * s_.k + step) * sizeof(float);                   // x time-major, step
}

size_t Slab::infer_scratch_bytes() const { return workspace_bytes() + train_scratch_bytes(); }

size_t Slab::backward_scratch_bytes() const {
  const size_t TB = size_t(s_.B) * s_.T, Gp = size_t(G_) * s_.p;
  const size_t U_rows = padded(s_.p) != s_.p ? Gp * padded(s_.p) : 0;
  size_t n = TB * s_.k + 2 * size_t(s_.B) * s_.p + U_rows;          // x time-major, da, dc, U_a
  if (s_.cell == kGruResetAfter) n += TB * padded(Gp);                // the gate gradients as U_a sees them
  return n * sizeof(float);
}

// Inside, rows are time-major (step t of sequence n is row t·B + n), so that a step's B rows are one
// contiguous matrix; x comes in and y, dx go out batch-major.
void Slab::forward(const Inputs& in, float* y, float* hT, float* cT, void* ws) const {
  const int B = s_.B, T = s_.T, k = s_.k, p = s_.p, Gp = G_ * p;
  const int64_t TB = int64_t(T) * B;
  const bool elman = s_.cell == kElman;
  if (lstm_in_registers()) {
    lstm_forward_in_registers(in, y, hT, cT, ws);
    return;
  }
  Scratch scratch((ws ? train_scratch_bytes() : infer_scratch_bytes()) / sizeof(float));
  float* hs = ws ? static_cast<float*>(ws) : scratch.data();  // (T, B, p): every a_t
  float* gates = elman ? hs : hs + TB * p;              // (T, B, G·p): W_a x_t, then the gate values
  float* extra = elman ? nullptr : gates + TB * Gp;     // (T, B, p): GRU hn, LSTM c_t
  float* x_tm = scratch.data() + (ws ? 0 : workspace_bytes() / sizeof(float));
  float* step = x_tm + TB * k;  // (B, G·p): GRU U_a a_{t-1}
  Team::get().run(P_, [&](int part) {
    to_time_major(in.x, B * part / P_, B * (part + 1) / P_, B, T, s_.seq_rows(), k, x_tm);
  });
  gemm_split(P_, 'N', 'T', TB, Gp, k, x_tm, k, in.W, k, 0.0f, gates, Gp);  // W_a x_t for every t at once
  for (int i = 0; i < T; ++i) {
    const int t = s_.reverse ? T - 1 - i : i;
    const int tp = s_.reverse ? t + 1 : t - 1;  // the previous step
    const float* a_prev = i == 0 ? in.h0 : hs + int64_t(tp) * B * p;
    float* g_t = gates + int64_t(t) * B * Gp;
    if (s_.cell == kGruResetAfter) {
      gemm_split(P_, 'N', 'T', B, Gp, p, a_prev, p, in.U, p, 0.0f, step, Gp);
    } else {
      gemm_split(P_, 'N', 'T', B, Gp, p, a_prev, p, in.U, p, 1.0f, g_t, Gp);  // + U_a a_{t-1}
    }
    each_split(P_, B, [&](int n) {
      const int64_t row = int64_t(t) * B + n;
      float* a = hs + row * p;
      switch (s_.cell) {
        case kElman:
          elman_row(a, in.b, p, s_.act);
          break;
        case kGruResetAfter:
          gru_row(g_t + int64_t(n) * Gp, step + int64_t(n) * Gp, in.b, in.c_n, a_prev + int64_t(n) * p,
                  extra + row * p, a, p);
          break;
        case kLstm: {
          const float* c_prev = i == 0 ? in.c0 + int64_t(n) * p : extra + (int64_t(tp) * B + n) * p;
          const bool pad = in.lengths != nullptr && t >= in.lengths[n];
          lstm_row(g_t + int64_t(n) * Gp, in.b, c_prev, extra + row * p, a, p, pad);
          break;
        }
      }
      if (y) std::memcpy(y + (n * s_.seq_rows() + t) * p, a, size_t(p) * sizeof(float));
    });
  }
  const int64_t last = int64_t(s_.reverse ? 0 : T - 1) * B * p;
  std::memcpy(hT, hs + last, size_t(B) * p * sizeof(float));
  if (s_.cell == kLstm) std::memcpy(cT, extra + last, size_t(B) * p * sizeof(float));
}

// The LSTM where its steps are split over threads: by units, each step's gates in the GEMM's registers
// (lstm_registers.h) on U_a packed once per call, where the CPU runs AVX-512 or AVX2.
bool Slab::lstm_in_registers() const {
  return s_.cell == kLstm && P_ > 1 && s_.p % 16 == 0 && lstm_registers_width() > 0;
}

// Where it trains (ws), every a_t, c_t and the gate values go to the workspace, time-major, as the backward
// reads them. Without gradient, a_t and c_t go to two blocks taken in turn (each written where the step
// before read, still in cache), and where x is one (B·T, k) matrix, W_a x_t stays batch-major (step t of
// sequence n at row n·T + t) with x read where it is.
void Slab::lstm_forward_in_registers(const Inputs& in, float* y, float* hT, float* cT, void* ws) const {
  const int B = s_.B, T = s_.T, k = s_.k, p = s_.p;
  const int64_t TB = int64_t(T) * B, Bp = int64_t(B) * p;
  const bool keep_gates = ws != nullptr, batch_major = !keep_gates && s_.seq_rows() == T;
  const int64_t blocks = keep_gates ? T : 2;  // of a_t and of c_t
  Scratch scratch((keep_gates ? 0 : 2 * blocks * Bp + TB * 4 * p) + (batch_major ? 0 : TB * k));
  float* hs = keep_gates ? static_cast<float*>(ws) : scratch.data();  // (blocks, B, p): a_t
  float* gates = hs + blocks * Bp;                                     // (T·B, 4p): W_a x_t, then i, f, g, o
  float* extra = gates + TB * 4 * p;                                   // (blocks, B, p): c_t
  float* x_tm = keep_gates ? scratch.data() : extra + blocks * Bp;     // (T, B, k)
  if (!batch_major) {
    Team::get().run(P_, [&](int part) {
      to_time_major(in.x, B * part / P_, B * (part + 1) / P_, B, T, s_.seq_rows(), k, x_tm);
    });
  }
  gemm_split(P_, 'N', 'T', TB, 4 * p, k, batch_major ? in.x : x_tm, k, in.W, k, 0.0f, gates, 4 * p);
  Scratch packed(size_t(4) * p * p);
  float* panels = packed.data();  // (64-byte aligned, as the panels' loads need)
  const int W = lstm_registers_width();
  auto at = [&](int t) { return int64_t(keep_gates ? t : t % 2) * Bp; };  // a_t's and c_t's block
  std::vector<float> keeps(size_t(P_) * B, 1.0f);
  StepParts steps(T, P_);
  Team::get().run(P_, [&](int home) {
    steps.run(home, [&](int i, int part) {
      const auto [u0, u1] = share(p, part, P_);
      if (u1 <= u0) return;
      if (i == 0) pack_lstm_panels(in.U, p, W, int(u0 / W), int(u1 / W), panels);  // in this core's cache
      const int t = s_.reverse ? T - 1 - i : i;
      const int tp = s_.reverse ? t + 1 : t - 1;  // the previous step
      float* keep = keeps.data() + int64_t(part) * B;
      if (in.lengths)
        for (int n = 0; n < B; ++n) keep[n] = t >= in.lengths[n] ? 0.0f : 1.0f;
      const LstmStep step{.B = B,
                          .p = p,
                          .a_prev = i == 0 ? in.h0 : hs + at(tp),
                          .panels = panels,
                          .gx = gates + int64_t(t) * (batch_major ? 1 : B) * 4 * p,
                          .gx_ld = int64_t(batch_major ? T : 1) * 4 * p,
                          .keep_gates = keep_gates,
                          .b = in.b,
                          .c_prev = i == 0 ? in.c0 : extra + at(tp),
                          .c = extra + at(t),
                          .a = hs + at(t),
                          .y = y ? y + int64_t(t) * p : nullptr,
                          .y_ld = s_.seq_rows() * p,
                          .keep = keep,
                          .units_last_first = i % 2 == 1};
      lstm_step_units(step, int(u0), int(u1));
    });
  });
  const int64_t last = at(s_.reverse ? 0 : T - 1);
  std::memcpy(hT, hs + last, size_t(B) * p * sizeof(float));
  std::memcpy(cT, extra + last, size_t(B) * p * sizeof(float));
}

void Slab::backward(const Inputs& in, const void* ws, const float* dy, const float* dhT, const float* dcT,
                    const Grads& g, float* dgates) const {
  const int B = s_.B, T = s_.T, k = s_.k, p = s_.p, Gp = G_ * p;
  const int64_t TB = int64_t(T) * B, ldg = padded(Gp), ldu = padded(p);
  const bool gru = s_.cell == kGruResetAfter, lstm = s_.cell == kLstm;
  const float* hs = static_cast<const float*>(ws);
  const float* gates = hs + TB * p;
  const float* extra = gates + gate_floats();
  Scratch scratch(backward_scratch_bytes() / sizeof(float));
  float* x_tm = scratch.data();                    // (T, B, k)
  float* da = x_tm + TB * k;                       // (B, p): the gradient wrt a_t carried from the step after
  float* dc = da + int64_t(B) * p;                 // (B, p): LSTM, wrt c_t
  float* U_rows = dc + int64_t(B) * p;             // (G·p, p): U_a with its rows ldu apart, where ldu != p
  float* dG = gru ? U_rows + (ldu != p ? Gp * ldu : 0) : dgates;  // (T, B, G·p), rows ldg apart: gate
                                                                  // gradients as U_a sees them
  std::memcpy(da, dhT, size_t(B) * p * sizeof(float));
  if (lstm) std::memcpy(dc, dcT, size_t(B) * p * sizeof(float));
  if (ldu != p)
    each_split(P_, Gp, [&](int r) { std::memcpy(U_rows + r * ldu, in.U + int64_t(r) * p, size_t(p) * sizeof(float)); });
  const float* U = ldu != p ? U_rows : in.U;
  const int first = s_.reverse ? T - 1 : 0;  // the forward's first step
  for (int i = 0; i < T; ++i) {
    const int t = s_.reverse ? i : T - 1 - i;  // the forward's steps, last first
    const int tp = s_.reverse ? t + 1 : t - 1;
    const float* a_prev = t == first ? in.h0 : hs + int64_t(tp) * B * p;
    each_split(P_, B, [&](int n) {
      const int64_t row = int64_t(t) * B + n;
      const float* dy_n = dy + (n * s_.seq_rows() + t) * p;
      float* da_n = da + int64_t(n) * p;
      switch (s_.cell) {
        case kElman:
          elman_row_back(hs + row * p, dy_n, da_n, dG + row * ldg, p, s_.act);
          break;
        case kGruResetAfter:
          gru_row_back(gates + row * Gp, extra + row * p, a_prev + int64_t(n) * p, dy_n, da_n, dG + row * ldg,
                       dgates + row * ldg, p);
          break;
        case kLstm: {
          const float* c_prev = t == first ? in.c0 + int64_t(n) * p : extra + (int64_t(tp) * B + n) * p;
          lstm_row_back(gates + row * Gp, extra + row * p, c_prev, dy_n, da_n, dc + int64_t(n) * p,
                        dG + row * ldg, p);
          break;
        }
      }
    });
    // da = (GRU: dh ⊙ z +) dG_t U_a, the gradient wrt a_{t-1}
    gemm_split(P_, 'N', 'N', B, p, Gp, dG + int64_t(t) * B * ldg, ldg, U, ldu, gru ? 1.0f : 0.0f, da, p);
  }
  std::memcpy(g.dh0, da, size_t(B) * p * sizeof(float));
  if (lstm) std::memcpy(g.dc0, dc, size_t(B) * p * sizeof(float));

  to_time_major(in.x, 0, B, B, T, s_.seq_rows(), k, x_tm);
  // The weight gradients as their transposes, then turned: dU_aᵀ = Σ_t a_{t-1}ᵀ dG_t, a_0 at the first step
  // and the kept states at the others; dW_aᵀ = Σ_t x_tᵀ dgates_t. (A weight gradient dGᵀ v (G·p, n) as
  // (vᵀ dG)ᵀ ran 2.2× faster on oneDNN 3.2's AVX2 sgemm at S3's dW_a (G·p 2048, n 300, over 3200 rows), and
  // no slower at S1's or S3's others.)
  Scratch transposed(size_t(Gp) * std::max(p, k));
  gemm_split(P_, 'T', 'N', p, Gp, B, in.h0, p, dG + int64_t(first) * B * ldg, ldg, 0.0f, transposed.data(), Gp);
  if (T > 1) {
    const float* dG_rest = s_.reverse ? dG : dG + int64_t(B) * ldg;
    const float* a_rest = s_.reverse ? hs + int64_t(B) * p : hs;
    gemm_split(P_, 'T', 'N', p, Gp, TB - B, a_rest, p, dG_rest, ldg, 1.0f, transposed.data(), Gp);
  }
  transpose_split(P_, transposed.data(), p, Gp, g.dU);
  gemm_split(P_, 'T', 'N', k, Gp, TB, x_tm, k, dgates, ldg, 0.0f, transposed.data(), Gp);
  transpose_split(P_, transposed.data(), k, Gp, g.dW);
  column_sums(dgates, TB, Gp, ldg, g.db);
  if (gru) column_sums(dG + 2 * p, TB, p, ldg, g.dc_n);  // c_n sits inside r ⊙ (U_n a + c_n)
}

namespace {

// dx (B, T, k) = dgates W_a (G·p, k): the input's gradient from the gates' gradients, one (T, B_slab, G·p) block
// of dgates per slab, rows padded(G·p) apart.
void input_gradient(const Shape& s, const float* dgates, const float* W, float* dx) {
  const int T = s.T, k = s.k, Gp = (s.cell == kElman ? 1 : s.cell == kLstm ? 4 : 3) * s.p;
  const auto parts = slabs(s);
  const int P = split_steps(s) ? Team::get().size() : 1;
  Team::get().run(int(parts.size()), [&](int i) {
    const auto [n0, n1] = parts[i];
    const int Bs = n1 - n0;
    Scratch scratch(size_t(T) * Bs * k);
    // dx_t = dgates_t W_a over the slab's (T, B_slab) rows, then back to batch-major
    gemm_split(P, 'N', 'N', int64_t(T) * Bs, k, Gp, dgates + int64_t(T) * n0 * padded(Gp), padded(Gp), W, k, 0.0f,
               scratch.data(), k);
    to_batch_major(scratch.data(), Bs, T, s.seq_rows(), k, dx + n0 * s.seq_rows() * k);
  });
}

Shape slab_shape(const Shape& s, int n0, int n1) {
  Shape t = s;
  t.B = n1 - n0;
  return t;
}

Inputs from_row(const Inputs& in, const Shape& s, int n0) {  // the inputs of sequences n0, n0 + 1, ...
  Inputs o = in;
  o.x = in.x + n0 * s.seq_rows() * s.k;
  o.h0 = in.h0 + int64_t(n0) * s.p;
  if (in.c0) o.c0 = in.c0 + int64_t(n0) * s.p;
  if (in.lengths) o.lengths = in.lengths + n0;
  return o;
}

}  // namespace

Kernel::Kernel(const Shape& s) : s_(s), G_(s.cell == kElman ? 1 : s.cell == kLstm ? 4 : 3) {
  if (!kernel_applies(s)) throw std::invalid_argument("the hand-written kernel does not run this cell");
}

// The workspace is linear in B: the whole batch's is the slabs' one after another, and slab [n0, n1)'s
// starts where the first n0 sequences' ends.
size_t Kernel::workspace_bytes() const { return Slab(s_).workspace_bytes(); }

void Kernel::forward(const Inputs& in, float* y, float* hT, float* cT, void* ws) const {
  const auto parts = slabs(s_);
  const int64_t T = s_.seq_rows(), p = s_.p;
  Team::get().run(int(parts.size()), [&](int i) {
    const auto [n0, n1] = parts[i];
    Slab(slab_shape(s_, n0, n1))
        .forward(from_row(in, s_, n0), y ? y + n0 * T * p : nullptr, hT + n0 * p, cT ? cT + n0 * p : nullptr,
                 ws ? static_cast<char*>(ws) + Slab(slab_shape(s_, 0, n0)).workspace_bytes() : nullptr);
  });
}

void Kernel::backward(const Inputs& in, const void* ws, const float* dy, const float* dhT, const float* dcT,
                      const Grads& g) const {
  const auto parts = slabs(s_);
  const int P = int(parts.size());
  const int64_t T = s_.T, p = s_.p, Gp = int64_t(G_) * p, ldg = padded(Gp);  // (dgates: T rows per sequence)
  // The first slab writes the weight gradients, the others their own sums, added at the end.
  const size_t sizes[4] = {size_t(Gp * s_.k), size_t(Gp * p), size_t(Gp), g.dc_n ? size_t(p) : 0};
  const size_t each = sizes[0] + sizes[1] + sizes[2] + sizes[3];
  Scratch partial(std::max<size_t>(1, (P - 1) * each));
  // the gates' gradients as W_a sees them: one (T, B_slab, G·p) block per slab, rows ldg apart, in the pool
  // rather than a result buffer of XLA's (fresh memory at every call, faulted in page by page)
  Scratch dgates(size_t(T) * s_.B * ldg);
  auto grads_of = [&](int i) {
    Grads gi{nullptr, g.dh0 + parts[i].first * p, g.dc0 ? g.dc0 + parts[i].first * p : nullptr,
             g.dW, g.dU, g.db, g.dc_n};
    if (i > 0) {
      float* at = partial.data() + (i - 1) * each;
      gi.dW = at, gi.dU = at + sizes[0], gi.db = at + sizes[0] + sizes[1];
      gi.dc_n = g.dc_n ? at + sizes[0] + sizes[1] + sizes[2] : nullptr;
    }
    return gi;
  };
  Team::get().run(P, [&](int i) {
    const auto [n0, n1] = parts[i];
    Slab(slab_shape(s_, n0, n1))
        .backward(from_row(in, s_, n0), static_cast<const char*>(ws) + Slab(slab_shape(s_, 0, n0)).workspace_bytes(),
                  dy + n0 * s_.seq_rows() * p, dhT + n0 * p, dcT ? dcT + n0 * p : nullptr, grads_of(i),
                  dgates.data() + T * n0 * ldg);
  });
  if (g.dx) input_gradient(s_, dgates.data(), in.W, g.dx);
  if (P == 1) return;
  Team::get().run(P, [&](int i) {  // each thread adds up its share of every array
    const Grads first = grads_of(0);
    float* outs[4] = {first.dW, first.dU, first.db, first.dc_n};
    for (int a = 0; a < 4; ++a) {
      const size_t lo = sizes[a] * i / P, hi = sizes[a] * (i + 1) / P;
      size_t off = 0;
      for (int b = 0; b < a; ++b) off += sizes[b];
      for (int j = 1; j < P; ++j) add_row(partial.data() + (j - 1) * each + off + lo, outs[a] + lo, int(hi - lo));
    }
  });
}

size_t scratch_bytes() { return Scratch::bytes_held(); }

// ---- long sequences in pieces (rematerialisation) ----

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

// The inputs of the piece that starts at step t0 from state (h, c); its lengths (masked) are the
// sequences' lengths counted from t0, clipped to 0..T, written to `lengths`.
Inputs piece_inputs(const Inputs& in, const Shape& ps, int t0, const float* h, const float* c, int32_t* lengths) {
  Inputs o = in;
  o.x = in.x + int64_t(t0) * ps.k;
  o.h0 = h;
  o.c0 = c;
  if (in.lengths) {
    for (int n = 0; n < ps.B; ++n) lengths[n] = std::clamp(in.lengths[n] - t0, 0, ps.T);
    o.lengths = lengths;
  }
  return o;
}

}  // namespace

int piece_count(const Shape& s, int chunk) { return (s.T + chunk - 1) / chunk; }

void forward_pieces(const Shape& s, int chunk, const Inputs& in, float* y, float* hT, float* cT, float* starts,
                    float* cstarts) {
  const int n = piece_count(s, chunk);
  const int64_t Bp = int64_t(s.B) * s.p;
  const bool lstm = s.cell == kLstm;
  std::vector<int32_t> lengths(s.B);
  std::memcpy(starts, in.h0, size_t(Bp) * sizeof(float));
  if (lstm) std::memcpy(cstarts, in.c0, size_t(Bp) * sizeof(float));
  for (int i = 0; i < n; ++i) {  // piece i starts from starts[i] and ends in starts[i + 1] (hT after the last)
    const auto [t0, ps] = piece(s, chunk, i);
    const bool last = i == n - 1;
    Kernel(ps).forward(piece_inputs(in, ps, t0, starts + i * Bp, lstm ? cstarts + i * Bp : nullptr, lengths.data()),
                       y ? y + int64_t(t0) * s.p : nullptr, last ? hT : starts + (i + 1) * Bp,
                       lstm ? (last ? cT : cstarts + (i + 1) * Bp) : nullptr, nullptr);
  }
}

void backward_pieces(const Shape& s, int chunk, const Inputs& in, const float* starts, const float* cstarts,
                     const float* dy, const float* dhT, const float* dcT, const Grads& g) {
  const int n = piece_count(s, chunk);
  const int64_t Bp = int64_t(s.B) * s.p;
  const bool lstm = s.cell == kLstm, gru = s.cell == kGruResetAfter;
  const int G = s.cell == kElman ? 1 : lstm ? 4 : 3;
  const size_t Gp = size_t(G) * s.p, sizes[4] = {Gp * s.k, Gp * s.p, Gp, gru ? size_t(s.p) : 0};
  const Shape longest = piece(s, chunk, s.reverse ? n - 1 : 0).second;  // the first in time is never short
  Scratch ws(Kernel(longest).workspace_bytes() / sizeof(float) + 1);
  Scratch state(6 * size_t(Bp));  // hT, cT of the forward again (unused); dh, dc in and out
  Scratch partial(sizes[0] + sizes[1] + sizes[2] + sizes[3]);
  float *dh = state.data() + 2 * Bp, *dc = dh + Bp, *dh_prev = dc + Bp, *dc_prev = dh_prev + Bp;
  float* sums[4] = {g.dW, g.dU, g.db, g.dc_n};
  float* parts[4] = {partial.data(), partial.data() + sizes[0], partial.data() + sizes[0] + sizes[1],
                     partial.data() + sizes[0] + sizes[1] + sizes[2]};
  for (int a = 0; a < 4; ++a)
    if (sizes[a]) std::fill(sums[a], sums[a] + sizes[a], 0.0f);
  std::vector<int32_t> lengths(s.B);
  std::memcpy(dh, dhT, size_t(Bp) * sizeof(float));
  if (lstm) std::memcpy(dc, dcT, size_t(Bp) * sizeof(float));
  for (int i = n - 1; i >= 0; --i) {  // last piece first: its forward again, keeping the workspace, then back
    const auto [t0, ps] = piece(s, chunk, i);
    const Inputs pin =
        piece_inputs(in, ps, t0, starts + i * Bp, lstm ? cstarts + i * Bp : nullptr, lengths.data());
    const Kernel kernel(ps);
    kernel.forward(pin, nullptr, state.data(), lstm ? state.data() + Bp : nullptr, ws.data());
    const Grads gi{g.dx + int64_t(t0) * s.k, dh_prev, lstm ? dc_prev : nullptr, parts[0], parts[1], parts[2],
                   gru ? parts[3] : nullptr};
    kernel.backward(pin, ws.data(), dy + int64_t(t0) * s.p, dh, lstm ? dc : nullptr, gi);
    for (int a = 0; a < 4; ++a)
      if (sizes[a]) add_row(parts[a], sums[a], int(sizes[a]));
    std::swap(dh, dh_prev);
    std::swap(dc, dc_prev);
  }
  std::memcpy(g.dh0, dh, size_t(Bp) * sizeof(float));
  if (lstm) std::memcpy(g.dc0, dc, size_t(Bp) * sizeof(float));
}

}  // namespace rnnlab
