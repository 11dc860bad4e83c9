// One recurrent layer on oneDNN's RNN primitives: a plan per shape, holding the primitives and the
// buffers for weights in the primitives' own formats.
//
// Layouts seen by callers (row-major, rnnlab's and PyTorch's):
//   x (B, T, k)   a0, c0, aT, cT (B, p)   a (B, T, p) every a_t
//   W_a (G·p, k)  U_a (G·p, p)  b_a (G·p,)  c_n (p,)   gates in PyTorch order (GRU r,z,n; LSTM i,f,g,o)
//   the workspace (workspace_bytes) and scratchpads (*_scratch_bytes) in oneDNN's own formats
// oneDNN writes the equations itself; the GRU's gates are reordered to its u, r, o (perm_).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "cells.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace rnnlab {

class Plan {
 public:
  explicit Plan(const Shape& s);

  int threads() const { return threads_; }
  size_t workspace_bytes() const { return ws_md_.get_size(); }
  size_t train_scratch_bytes() const { return fwd_.scratchpad_desc().get_size(); }
  size_t infer_scratch_bytes() const { return inf_.scratchpad_desc().get_size(); }
  size_t backward_scratch_bytes() const { return bwd_.scratchpad_desc().get_size(); }

  // a, aT, cT from the inputs; `ws` non-null selects forward training (it keeps what backward needs).
  void forward(const Inputs& in, float* a, float* aT, float* cT, void* ws, void* scratch);
  // Gradients wrt every input from the cotangents da, daT, dcT (dcT null unless LSTM).
  void backward(const Inputs& in, const float* a, const float* aT, const float* cT, void* ws,
                const float* da, const float* daT, const float* dcT, const Grads& g, void* scratch);

 private:
  struct Weights {  // weights as one primitive wants them
    dnnl::memory::desc layer, iter;
    std::vector<float> layer_buf, iter_buf;
  };

  void pack_weights(const Inputs& in);
  void place(const Weights& want, Weights& have, dnnl::memory& layer, dnnl::memory& iter);
  const float* src_layer(const Inputs& in);

  Shape s_;
  int G_, Gb_, kin_, threads_;
  std::vector<int> perm_;  // oneDNN gate g reads rnnlab gate perm_[g]
  dnnl::memory::desc x_md_, y_md_, iter_md_, wl_md_, wi_md_, bias_md_, ws_md_;
  dnnl::primitive_desc fwd_, inf_, bwd_;
  dnnl::primitive fwd_prim_, inf_prim_, bwd_prim_;
  Weights want_fwd_, want_inf_, want_bwd_, diff_;
  std::vector<float> wl_plain_, wi_plain_, bias_plain_, dbias_, x_aug_, dx_aug_;
  std::mutex mu_;

  friend Plan& plan_for(const Shape& s);
};

// OpenMP threads for a shape: all of them where a step's matmuls are large, else one (a step of
// B·G·p·(k+p) below a few million multiply-adds gains less from a second thread than it loses to the
// fork and join of every step, and loses much more when the cores are busy). RNNLAB_FAST_THREADS=n sets it.
int threads_for(const Shape& s);

// A step of B·G·p·(k+p) multiply-adds of 8 million or more (S3's, not S1's): the same answer on every thread.
bool large_steps(const Shape& s);

// Runs the enclosed code with n OpenMP threads in this thread, and puts the old number back.
class ThreadScope {
 public:
  explicit ThreadScope(int n);
  ~ThreadScope();

 private:
  int old_;
};

// Runs `job` with n OpenMP threads, and waits for it. With n > 1 the job runs on one long-lived thread of
// the engine's own: XLA calls the handlers from whichever of its threads is free, GNU OpenMP keeps one team
// of workers per calling thread, and two teams spinning on two cores slow each other down. Jobs from
// several callers run one after another.
void run_with_threads(int n, const std::function<void()>& job);

// The cached plan for a shape (built on first use; thread-safe).
Plan& plan_for(const Shape& s);

}  // namespace rnnlab
