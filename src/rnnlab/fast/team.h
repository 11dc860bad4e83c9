// The kernel's threads: a team kept between calls (Team), the parts of a loop's steps shared among the
// jobs of one run (StepParts), and each_split, a loop over a count split between P of the team's threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "plan.h"  // ThreadScope

namespace rnnlab {

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

// f(n) for n in 0..count, split over P threads of the team.
inline void each_split(int P, int count, const std::function<void(int)>& f) {
  Team::get().run(P, [&](int j) {
    for (int n = int(int64_t(count) * j / P); n < int(int64_t(count) * (j + 1) / P); ++n) f(n);
  });
}

}  // namespace rnnlab
