// Scratch memory kept between calls: a fresh (page-faulted) buffer of tens of MB per call costs
// milliseconds, so a call takes a free buffer from the pool and gives it back when done. The pool keeps
// at most RNNLAB_SCRATCH_MB megabytes (default 1024); past that, a buffer is freed when its call ends.
//
//   Scratch buf(n);   buf.data(): n floats, 64-byte aligned, uninitialised, this object's until it ends
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace rnnlab {

class Scratch {
 public:
  explicit Scratch(size_t floats);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() { return buf_.data.get(); }
  static size_t bytes_held();  // in all the pool's buffers, free or in use

  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  struct Buffer {
    std::unique_ptr<float[], Free> data;  // 64-byte aligned: rows of 16·m floats start on cache lines
    size_t size = 0;
  };

 private:
  Buffer buf_;
};

}  // namespace rnnlab
