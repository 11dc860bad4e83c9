#include "plan.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace rnnlab {
namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;
using dt = memory::data_type;

// A padding step of a masked LSTM adds -kBig to the input gate and +kBig to the forget gate:
// i = 0 and f = 1 exactly, so c_t = c_{t-1} and c_T is the cell state at each sequence's end.
constexpr float kBig = 1000.0f;

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& stream() {
  thread_local dnnl::stream strm(engine());
  return strm;
}

algorithm activation(int act) {
  switch (act) {
    case kTanh: return algorithm::eltwise_tanh;
    case kRelu: return algorithm::eltwise_relu;
    case kSigmoid: return algorithm::eltwise_logistic;
  }
  throw std::invalid_argument("unsupported activation " + std::to_string(act));
}

memory mem(const memory::desc& md, const void* p) {
  return memory(md, engine(), const_cast<void*>(p));
}

void reorder(const memory& from, const memory& to) {
  dnnl::reorder(from, to).execute(stream(), const_cast<memory&>(from), const_cast<memory&>(to));
}

}  // namespace

int threads_for(const Shape& s) {
  if (const char* env = std::getenv("RNNLAB_FAST_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return large_steps(s) ? omp_get_max_threads() : 1;
}

bool large_steps(const Shape& s) {
  return double(s.B) * s.G() * s.p * (s.k + s.p) >= 8e6;  // multiply-adds per step
}

void run_with_threads(int n, const std::function<void()>& job) {
  if (n <= 1) {
    ThreadScope scope(1);
    job();
    return;
  }
  struct Engine {  // never destroyed: the thread lives as long as the process
    std::mutex call, mu;
    std::condition_variable cv;
    const std::function<void()>* job = nullptr;
    int threads = 1;
    bool done = false;
    std::exception_ptr error;
  };
  static Engine* engine = [] {
    auto* e = new Engine;
    std::thread([e] {
      std::unique_lock<std::mutex> lock(e->mu);
      for (;;) {
        e->cv.wait(lock, [e] { return e->job != nullptr; });
        try {
          ThreadScope scope(e->threads);
          (*e->job)();
        } catch (...) {
          e->error = std::current_exception();
        }
        e->job = nullptr;
        e->done = true;
        e->cv.notify_all();
      }
    }).detach();
    return e;
  }();
  std::lock_guard<std::mutex> one_at_a_time(engine->call);
  std::unique_lock<std::mutex> lock(engine->mu);
  engine->job = &job;
  engine->threads = n;
  engine->done = false;
  engine->error = nullptr;
  engine->cv.notify_all();
  engine->cv.wait(lock, [] { return engine->done; });
  if (engine->error) std::rethrow_exception(engine->error);
}

ThreadScope::ThreadScope(int n) : old_(omp_get_max_threads()) { omp_set_num_threads(n); }
ThreadScope::~ThreadScope() { omp_set_num_threads(old_); }

Plan::Plan(const Shape& s) : s_(s), threads_(threads_for(s)) {
  ThreadScope scope(threads_);
  const bool lstm = s.cell == kLstm;
  G_ = s.G();
  Gb_ = s.cell == kGruResetAfter ? 4 : G_;
  kin_ = s.k + (lstm && s.masked ? 1 : 0);
  perm_.resize(G_);
  for (int g = 0; g < G_; ++g) perm_[g] = g;
  if (s.cell == kGru || s.cell == kGruResetAfter) perm_ = {1, 0, 2};  // oneDNN u, r, o = rnnlab z, r, n

  const memory::dim T = s.T, B = s.B, p = s.p, G = G_;
  x_md_ = memory::desc({T, B, kin_}, dt::f32, tag::ntc);
  y_md_ = memory::desc({T, B, p}, dt::f32, tag::ntc);
  iter_md_ = memory::desc({1, 1, B, p}, dt::f32, tag::ldnc);
  wl_md_ = memory::desc({1, 1, kin_, G, p}, dt::f32, tag::ldgoi);
  wi_md_ = memory::desc({1, 1, p, G, p}, dt::f32, tag::ldgoi);
  bias_md_ = memory::desc({1, 1, Gb_, p}, dt::f32, tag::ldgo);
  const auto wl_any = memory::desc({1, 1, kin_, G, p}, dt::f32, tag::any);
  const auto wi_any = memory::desc({1, 1, p, G, p}, dt::f32, tag::any);
  const auto c_md = lstm ? iter_md_ : memory::desc();
  const auto dir = s.reverse ? dnnl::rnn_direction::unidirectional_right2left
                             : dnnl::rnn_direction::unidirectional_left2right;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& eng = engine();
  const auto &x = x_md_, &y = y_md_, &h = iter_md_, &b = bias_md_;

  switch (s.cell) {
    case kElman: {
      using F = dnnl::vanilla_rnn_forward;
      using Bk = dnnl::vanilla_rnn_backward;
      const auto a = activation(s.act);
      F::primitive_desc ft(eng, prop_kind::forward_training, a, dir, x, h, wl_any, wi_any, b, y, h, attr);
      F::primitive_desc fi(eng, prop_kind::forward_inference, a, dir, x, h, wl_any, wi_any, b, y, h, attr);
      Bk::primitive_desc bk(eng, prop_kind::backward, a, dir, x, h, wl_any, wi_any, b, y, h, x, h, wl_any,
                            wi_any, b, y, h, ft, attr);
      fwd_ = ft; inf_ = fi; bwd_ = bk;
      fwd_prim_ = F(ft); inf_prim_ = F(fi); bwd_prim_ = Bk(bk);
      break;
    }
    case kGru:
    case kGruResetAfter: {
      // Both GRU primitives take the same descriptors; they differ in where the reset gate applies.
      auto build = [&]<class F, class Bk>() {
        typename F::primitive_desc ft(eng, prop_kind::forward_training, dir, x, h, wl_any, wi_any, b, y, h, attr);
        typename F::primitive_desc fi(eng, prop_kind::forward_inference, dir, x, h, wl_any, wi_any, b, y, h,
                                      attr);
        typename Bk::primitive_desc bk(eng, prop_kind::backward, dir, x, h, wl_any, wi_any, b, y, h, x, h,
                                       wl_any, wi_any, b, y, h, ft, attr);
        fwd_ = ft; inf_ = fi; bwd_ = bk;
        fwd_prim_ = F(ft); inf_prim_ = F(fi); bwd_prim_ = Bk(bk);
      };
      if (s.cell == kGru) {
        build.template operator()<dnnl::gru_forward, dnnl::gru_backward>();
      } else {
        build.template operator()<dnnl::lbr_gru_forward, dnnl::lbr_gru_backward>();
      }
      break;
    }
    case kLstm: {
      using F = dnnl::lstm_forward;
      using Bk = dnnl::lstm_backward;
      F::primitive_desc ft(eng, prop_kind::forward_training, dir, x, h, c_md, wl_any, wi_any, b, y, h, c_md,
                           attr);
      F::primitive_desc fi(eng, prop_kind::forward_inference, dir, x, h, c_md, wl_any, wi_any, b, y, h, c_md,
                           attr);
      Bk::primitive_desc bk(eng, prop_kind::backward, dir, x, h, c_md, wl_any, wi_any, b, y, h, c_md, x, h, c_md,
                            wl_any, wi_any, b, y, h, c_md, ft, attr);
      fwd_ = ft; inf_ = fi; bwd_ = bk;
      fwd_prim_ = F(ft); inf_prim_ = F(fi); bwd_prim_ = Bk(bk);
      break;
    }
    default:
      throw std::invalid_argument("unsupported cell " + std::to_string(s.cell));
  }
  ws_md_ = fwd_.query_md(dnnl::query::workspace_md);
  auto wants = [](const dnnl::primitive_desc& pd, int wl_arg, int wi_arg) {
    Weights w;
    w.layer = pd.query_md(dnnl::query::exec_arg_md, wl_arg);
    w.iter = pd.query_md(dnnl::query::exec_arg_md, wi_arg);
    w.layer_buf.resize(w.layer.get_size() / sizeof(float));
    w.iter_buf.resize(w.iter.get_size() / sizeof(float));
    return w;
  };
  want_fwd_ = wants(fwd_, DNNL_ARG_WEIGHTS_LAYER, DNNL_ARG_WEIGHTS_ITER);
  want_inf_ = wants(inf_, DNNL_ARG_WEIGHTS_LAYER, DNNL_ARG_WEIGHTS_ITER);
  want_bwd_ = wants(bwd_, DNNL_ARG_WEIGHTS_LAYER, DNNL_ARG_WEIGHTS_ITER);
  diff_ = wants(bwd_, DNNL_ARG_DIFF_WEIGHTS_LAYER, DNNL_ARG_DIFF_WEIGHTS_ITER);
  wl_plain_.resize(size_t(G_) * s.p * kin_);
  wi_plain_.resize(size_t(G_) * s.p * s.p);
  bias_plain_.resize(size_t(Gb_) * s.p);
  dbias_.resize(size_t(Gb_) * s.p);
  if (kin_ != s.k) {
    x_aug_.resize(size_t(s.B) * s.T * kin_);
    dx_aug_.resize(x_aug_.size());
  }
}

// W_a, U_a, b_a (and c_n) into oneDNN's plain ldgoi / ldgo layouts, gates in oneDNN's order.
void Plan::pack_weights(const Inputs& in) {
  const size_t p = s_.p, k = s_.k, kin = kin_;
  for (int g = 0; g < G_; ++g) {
    const size_t src = size_t(perm_[g]) * p, dst = size_t(g) * p;
    if (kin == k) {
      std::memcpy(&wl_plain_[dst * k], in.W + src * k, p * k * sizeof(float));
    } else {
      const float extra = g == 0 ? -kBig : g == 1 ? kBig : 0.0f;  // LSTM i, f
      for (size_t o = 0; o < p; ++o) {
        std::memcpy(&wl_plain_[(dst + o) * kin], in.W + (src + o) * k, k * sizeof(float));
        wl_plain_[(dst + o) * kin + k] = extra;
      }
    }
    std::memcpy(&wi_plain_[dst * p], in.U + src * p, p * p * sizeof(float));
    std::memcpy(&bias_plain_[dst], in.b + src, p * sizeof(float));
  }
  if (Gb_ > G_) std::memcpy(&bias_plain_[size_t(G_) * p], in.c_n, p * sizeof(float));
}

// The packed weights in the formats `want` asks for: the plain buffers themselves, or a reorder of them.
void Plan::place(const Weights& want, Weights& have, memory& layer, memory& iter) {
  auto one = [&](const memory::desc& plain_md, std::vector<float>& plain, const memory::desc& md,
                 std::vector<float>& buf) {
    memory from = mem(plain_md, plain.data());
    if (md == plain_md) return from;
    memory to = mem(md, buf.data());
    reorder(from, to);
    return to;
  };
  layer = one(wl_md_, wl_plain_, want.layer, have.layer_buf);
  iter = one(wi_md_, wi_plain_, want.iter, have.iter_buf);
}

// x itself, or x with one more feature per step: 1 on padding steps (t >= length), 0 before.
const float* Plan::src_layer(const Inputs& in) {
  if (kin_ == s_.k) return in.x;
  const size_t k = s_.k, kin = kin_;
  for (int n = 0; n < s_.B; ++n) {
    for (int t = 0; t < s_.T; ++t) {
      const size_t row = size_t(n) * s_.T + t;
      std::memcpy(&x_aug_[row * kin], in.x + row * k, k * sizeof(float));
      x_aug_[row * kin + k] = t >= in.lengths[n] ? 1.0f : 0.0f;
    }
  }
  return x_aug_.data();
}

void Plan::forward(const Inputs& in, float* a, float* aT, float* cT, void* ws, void* scratch) {
  std::lock_guard<std::mutex> lock(mu_);
  ThreadScope scope(threads_);
  const bool train = ws != nullptr;
  pack_weights(in);
  memory wl, wi;
  place(train ? want_fwd_ : want_inf_, train ? want_fwd_ : want_inf_, wl, wi);
  const auto& pd = train ? fwd_ : inf_;
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC_LAYER, mem(x_md_, src_layer(in))},
      {DNNL_ARG_SRC_ITER, mem(iter_md_, in.a0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},
      {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, mem(bias_md_, bias_plain_.data())},
      {DNNL_ARG_DST_LAYER, mem(y_md_, a)},
      {DNNL_ARG_DST_ITER, mem(iter_md_, aT)},
      {DNNL_ARG_SCRATCHPAD, mem(pd.scratchpad_desc(), scratch)},
  };
  if (s_.cell == kLstm) {
    args[DNNL_ARG_SRC_ITER_C] = mem(iter_md_, in.c0);
    args[DNNL_ARG_DST_ITER_C] = mem(iter_md_, cT);
  }
  if (train) args[DNNL_ARG_WORKSPACE] = mem(ws_md_, ws);
  (train ? fwd_prim_ : inf_prim_).execute(stream(), args);
  stream().wait();
}

void Plan::backward(const Inputs& in, const float* a, const float* aT, const float* cT, void* ws,
                    const float* da, const float* daT, const float* dcT, const Grads& g, void* scratch) {
  std::lock_guard<std::mutex> lock(mu_);
  ThreadScope scope(threads_);
  pack_weights(in);
  memory wl, wi;
  place(want_bwd_, want_bwd_, wl, wi);
  // backward adds onto the weight gradients: start them at zero
  std::fill(diff_.layer_buf.begin(), diff_.layer_buf.end(), 0.0f);
  std::fill(diff_.iter_buf.begin(), diff_.iter_buf.end(), 0.0f);
  std::fill(dbias_.begin(), dbias_.end(), 0.0f);
  const bool aug = kin_ != s_.k;
  memory dwl = mem(diff_.layer, diff_.layer_buf.data()), dwi = mem(diff_.iter, diff_.iter_buf.data());
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC_LAYER, mem(x_md_, src_layer(in))},
      {DNNL_ARG_SRC_ITER, mem(iter_md_, in.a0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},
      {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, mem(bias_md_, bias_plain_.data())},
      {DNNL_ARG_DST_LAYER, mem(y_md_, a)},
      {DNNL_ARG_DST_ITER, mem(iter_md_, aT)},
      {DNNL_ARG_WORKSPACE, mem(ws_md_, ws)},
      {DNNL_ARG_DIFF_DST_LAYER, mem(y_md_, da)},
      {DNNL_ARG_DIFF_DST_ITER, mem(iter_md_, daT)},
      {DNNL_ARG_DIFF_SRC_LAYER, mem(x_md_, aug ? dx_aug_.data() : g.dx)},
      {DNNL_ARG_DIFF_SRC_ITER, mem(iter_md_, g.da0)},
      {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwl},
      {DNNL_ARG_DIFF_WEIGHTS_ITER, dwi},
      {DNNL_ARG_DIFF_BIAS, mem(bias_md_, dbias_.data())},
      {DNNL_ARG_SCRATCHPAD, mem(bwd_.scratchpad_desc(), scratch)},
  };
  if (s_.cell == kLstm) {
    args[DNNL_ARG_SRC_ITER_C] = mem(iter_md_, in.c0);
    args[DNNL_ARG_DST_ITER_C] = mem(iter_md_, cT);
    args[DNNL_ARG_DIFF_DST_ITER_C] = mem(iter_md_, dcT);
    args[DNNL_ARG_DIFF_SRC_ITER_C] = mem(iter_md_, g.dc0);
  }
  bwd_prim_.execute(stream(), args);
  stream().wait();
  // weight gradients back to plain ldgoi, then into rnnlab's gate order
  if (!(diff_.layer == wl_md_)) reorder(dwl, mem(wl_md_, wl_plain_.data()));
  else std::copy(diff_.layer_buf.begin(), diff_.layer_buf.end(), wl_plain_.begin());
  if (!(diff_.iter == wi_md_)) reorder(dwi, mem(wi_md_, wi_plain_.data()));
  else std::copy(diff_.iter_buf.begin(), diff_.iter_buf.end(), wi_plain_.begin());
  stream().wait();
  const size_t p = s_.p, k = s_.k, kin = kin_;
  for (int gi = 0; gi < G_; ++gi) {
    const size_t src = size_t(gi) * p, dst = size_t(perm_[gi]) * p;
    for (size_t o = 0; o < p; ++o)
      std::memcpy(g.dW + (dst + o) * k, &wl_plain_[(src + o) * kin], k * sizeof(float));
    std::memcpy(g.dU + dst * p, &wi_plain_[src * p], p * p * sizeof(float));
    std::memcpy(g.db + dst, &dbias_[src], p * sizeof(float));
  }
  if (Gb_ > G_) std::memcpy(g.dc_n, &dbias_[size_t(G_) * p], p * sizeof(float));
  if (aug) {
    const size_t rows = size_t(s_.B) * s_.T;
    for (size_t r = 0; r < rows; ++r) std::memcpy(g.dx + r * k, &dx_aug_[r * kin], k * sizeof(float));
  }
}

Plan& plan_for(const Shape& s) {
  static std::mutex mu;
  static std::unordered_map<Shape, std::unique_ptr<Plan>, ShapeHash> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = plans[s];
  if (!slot) {
    try {
      slot = std::make_unique<Plan>(s);
    } catch (...) {
      plans.erase(s);
      throw;
    }
  }
  return *slot;
}

}  // namespace rnnlab
