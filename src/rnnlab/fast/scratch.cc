#include "scratch.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace rnnlab {
namespace {

float* aligned_floats(size_t n) {
  void* p = std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<float*>(p);
}

size_t cap_bytes() {
  static const size_t cap = [] {
    const char* env = std::getenv("RNNLAB_SCRATCH_MB");
    return size_t(env ? std::max(0L, std::atol(env)) : 1024L) << 20;
  }();
  return cap;
}

std::atomic<size_t>& held() {  // floats in all the pool's buffers, free or in use
  static std::atomic<size_t> n{0};
  return n;
}

std::mutex& mu() {
  static std::mutex m;
  return m;
}

std::vector<Scratch::Buffer>& pool() {
  static std::vector<Scratch::Buffer> p;
  return p;
}

}  // namespace

Scratch::Scratch(size_t floats) {
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

Scratch::~Scratch() {
  std::lock_guard<std::mutex> lock(mu());
  if (bytes_held() > cap_bytes()) {
    held().fetch_sub(buf_.size);  // buf_ is freed with this
    return;
  }
  pool().push_back(std::move(buf_));
}

size_t Scratch::bytes_held() { return held().load() * sizeof(float); }

}  // namespace rnnlab
