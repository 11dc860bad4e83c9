// XLA FFI handlers for one recurrent layer (forward, forward training, backward; whole or in pieces), and a
// C function that reports a shape's buffer sizes so that the Python side can ask XLA for them. Every
// handler takes the layer's attributes (engine.py's Config): cell, act, reverse, masked, and kernel, which
// says whether the hand-written kernel (kernel.h) or oneDNN's primitives (plan.h) run it: Python decides
// that (fast/layer.py's config), these handlers follow.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "cells.h"
#include "kernel.h"
#include "lstm_registers.h"
#include "pieces.h"
#include "plan.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace rnnlab {
namespace {

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using Out = ffi::ResultBuffer<ffi::F32>;
using Bytes = ffi::ResultBuffer<ffi::U8>;

// `within` runs on the kernel only, and not in pieces: elsewhere it is refused.
Shape shape_of(const F32& x, const F32& U, int32_t cell, int32_t act, int32_t reverse, int32_t masked,
               int32_t within = 0, bool within_runs = false) {
  if (within && !within_runs) throw std::invalid_argument("within lengths runs on the kernel, whole sequences");
  const auto xd = x.dimensions();
  const auto ud = U.dimensions();
  Shape s{cell, act, reverse, masked, int(xd[0]), int(xd[1]), int(xd[2]), int(ud[1])};
  s.within = within;
  return s;
}

// Asks the OS to back a result buffer of XLA's with 2 MB pages where it can (transparent huge pages,
// `madvise` mode). XLA allocates a result afresh at every call, and glibc maps a block of over 32 MB
// straight from the OS, so that every call first touches new pages, a fault for every 4 KB page of a
// large workspace (benchmarks/README.md has what that costs). Only the whole 2 MB pages inside the buffer.
void huge_pages(void* data, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // (a hint: errors ignored)
}

Inputs inputs_of(const Shape& s, const F32& x, const F32& a0, const F32& c0, const F32& W, const F32& U,
                 const F32& b, const F32& c_n, const S32& lengths) {
  return Inputs{x.typed_data(),
                a0.typed_data(),
                s.cell == kLstm ? c0.typed_data() : nullptr,
                W.typed_data(),
                U.typed_data(),
                b.typed_data(),
                s.cell == kGruResetAfter ? c_n.typed_data() : nullptr,
                s.masked || s.within ? lengths.typed_data() : nullptr};
}

ffi::Error Forward(F32 x, F32 a0, F32 c0, F32 W, F32 U, F32 b, F32 c_n, S32 lengths, Out a, Out aT, Out cT,
                   Bytes ws, Bytes scratch, int32_t cell, int32_t act, int32_t reverse, int32_t masked,
                   int32_t kernel, int32_t within, int32_t train) {
  try {
    const Shape s = shape_of(x, U, cell, act, reverse, masked, within, kernel != 0);
    const Inputs in = inputs_of(s, x, a0, c0, W, U, b, c_n, lengths);
    float* c_out = cell == kLstm ? cT->typed_data() : nullptr;
    void* keep = train ? ws->untyped_data() : nullptr;
    if (kernel) {  // on the kernel's own threads
      if (keep) huge_pages(keep, ws->size_bytes());
      huge_pages(a->typed_data(), a->size_bytes());
      Kernel(s).forward(in, a->typed_data(), aT->typed_data(), c_out, keep);
    } else {
      run_with_threads(threads_for(s), [&] {
        plan_for(s).forward(in, a->typed_data(), aT->typed_data(), c_out, keep, scratch->untyped_data());
      });
    }
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("rnnlab fused forward: ") + e.what());
  }
  return ffi::Error::Success();
}

// oneDNN's backward (the kernel's is KernelBackward).
ffi::Error Backward(F32 x, F32 a0, F32 c0, F32 W, F32 U, F32 b, F32 c_n, S32 lengths, F32 a, F32 aT, F32 cT,
                    ffi::Buffer<ffi::U8> ws, F32 da, F32 daT, F32 dcT, Out dx, Out da0, Out dc0, Out dW,
                    Out dU, Out db, Out dc_n, Bytes scratch, int32_t cell, int32_t act, int32_t reverse,
                    int32_t masked, int32_t kernel, int32_t within) {
  try {
    if (kernel) throw std::invalid_argument("the kernel's backward is rnnlab_kernel_backward");
    const Shape s = shape_of(x, U, cell, act, reverse, masked, within);
    const bool lstm = cell == kLstm;
    Grads g{dx->typed_data(), da0->typed_data(), lstm ? dc0->typed_data() : nullptr,
            dW->typed_data(), dU->typed_data(),  db->typed_data(),
            cell == kGruResetAfter ? dc_n->typed_data() : nullptr};
    run_with_threads(threads_for(s), [&] {
      plan_for(s).backward(inputs_of(s, x, a0, c0, W, U, b, c_n, lengths), a.typed_data(), aT.typed_data(),
                           lstm ? cT.typed_data() : nullptr, ws.untyped_data(), da.typed_data(), daT.typed_data(),
                           lstm ? dcT.typed_data() : nullptr, g, scratch->untyped_data());
    });
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("rnnlab fused backward: ") + e.what());
  }
  return ffi::Error::Success();
}

// The kernel's backward: as Backward, dx only where `with_dx` is 1 (else its result is a placeholder of one
// float). Where x needs no gradient (the caller knows it when tracing), its GEMM is not run.
ffi::Error KernelBackward(F32 x, F32 a0, F32 c0, F32 W, F32 U, F32 b, F32 c_n, S32 lengths,
                          ffi::Buffer<ffi::U8> ws, F32 da, F32 daT, F32 dcT, Out dx, Out da0, Out dc0, Out dW,
                          Out dU, Out db, Out dc_n, int32_t cell, int32_t act, int32_t reverse, int32_t masked,
                          int32_t kernel, int32_t within, int32_t with_dx) {
  try {
    const Shape s = shape_of(x, U, cell, act, reverse, masked, within, true);
    const bool lstm = cell == kLstm;
    if (with_dx && dx->element_count() != x.element_count())
      throw std::invalid_argument("dx holds " + std::to_string(dx->element_count()) + " floats; x holds " +
                                  std::to_string(x.element_count()));
    Grads g{with_dx ? dx->typed_data() : nullptr,
            da0->typed_data(),
            lstm ? dc0->typed_data() : nullptr,
            dW->typed_data(),
            dU->typed_data(),
            db->typed_data(),
            cell == kGruResetAfter ? dc_n->typed_data() : nullptr};
    Kernel(s).backward(inputs_of(s, x, a0, c0, W, U, b, c_n, lengths), ws.untyped_data(), da.typed_data(),
                       daT.typed_data(), lstm ? dcT.typed_data() : nullptr, g);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("rnnlab kernel backward: ") + e.what());
  }
  return ffi::Error::Success();
}

// A long sequence in pieces of `chunk` steps (pieces.h), on the kernel only: the forward, which keeps the
// state at the start of every piece, and the backward, which runs each piece forward again and back.

void check_chunk(int32_t chunk, int32_t kernel) {
  if (chunk < 1) throw std::invalid_argument("chunk must be >= 1 steps; got " + std::to_string(chunk));
  if (!kernel) throw std::invalid_argument("pieces run on the kernel only");
}

// Throws unless chunk >= 1 and `starts` (what is named `what`) holds one (B, p) state per piece.
void check_pieces(const Shape& s, int32_t chunk, int32_t kernel, size_t starts, const char* what) {
  check_chunk(chunk, kernel);
  const size_t n = size_t(piece_count(s, chunk));
  if (starts != n * s.B * s.p)
    throw std::invalid_argument(std::string(what) + " holds " + std::to_string(starts) + " floats; expected (" +
                                std::to_string(n) + ", " + std::to_string(s.B) + ", " + std::to_string(s.p) +
                                "): one state per piece of " + std::to_string(chunk) + " steps");
}

ffi::Error PiecesForward(F32 x, F32 a0, F32 c0, F32 W, F32 U, F32 b, F32 c_n, S32 lengths, Out a, Out aT, Out cT,
                         Out a_starts, Out c_starts, int32_t cell, int32_t act, int32_t reverse, int32_t masked,
                         int32_t kernel, int32_t within, int32_t chunk) {
  try {
    const Shape s = shape_of(x, U, cell, act, reverse, masked, within);
    const bool lstm = cell == kLstm;
    check_pieces(s, chunk, kernel, a_starts->element_count(), "a_starts");
    if (lstm) {
      check_pieces(s, chunk, kernel, c_starts->element_count(), "c_starts");
    } else {  // placeholders
      std::fill_n(cT->typed_data(), cT->element_count(), 0.0f);
      std::fill_n(c_starts->typed_data(), c_starts->element_count(), 0.0f);
    }
    forward_pieces(s, chunk, inputs_of(s, x, a0, c0, W, U, b, c_n, lengths), a->typed_data(), aT->typed_data(),
                   lstm ? cT->typed_data() : nullptr, a_starts->typed_data(),
                   lstm ? c_starts->typed_data() : nullptr);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("rnnlab forward in pieces: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error PiecesBackward(F32 x, F32 a0, F32 c0, F32 W, F32 U, F32 b, F32 c_n, S32 lengths, F32 a_starts,
                          F32 c_starts, F32 da, F32 daT, F32 dcT, Out dx, Out da0, Out dc0, Out dW, Out dU, Out db,
                          Out dc_n, int32_t cell, int32_t act, int32_t reverse, int32_t masked, int32_t kernel,
                          int32_t within, int32_t chunk) {
  try {
    const Shape s = shape_of(x, U, cell, act, reverse, masked, within);
    const bool lstm = cell == kLstm;
    check_pieces(s, chunk, kernel, a_starts.element_count(), "a_starts");
    if (lstm) check_pieces(s, chunk, kernel, c_starts.element_count(), "c_starts");
    Grads g{dx->typed_data(), da0->typed_data(), lstm ? dc0->typed_data() : nullptr,
            dW->typed_data(), dU->typed_data(), db->typed_data(),
            cell == kGruResetAfter ? dc_n->typed_data() : nullptr};
    backward_pieces(s, chunk, inputs_of(s, x, a0, c0, W, U, b, c_n, lengths), a_starts.typed_data(),
                    lstm ? c_starts.typed_data() : nullptr, da.typed_data(), daT.typed_data(),
                    lstm ? dcT.typed_data() : nullptr, g);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("rnnlab backward in pieces: ") + e.what());
  }
  return ffi::Error::Success();
}

// The forward in pieces (as PiecesForward) with a as its only result: XLA can reuse the buffer of a call's
// only result for an elementwise function of it (the loss's da, in place), not that of one of several.
// For Elman and the GRU, whose states the caller reads from a.
ffi::Error PiecesForwardA(F32 x, F32 a0, F32 c0, F32 W, F32 U, F32 b, F32 c_n, S32 lengths, Out a, int32_t cell,
                          int32_t act, int32_t reverse, int32_t masked, int32_t kernel, int32_t within, int32_t chunk) {
  try {
    const Shape s = shape_of(x, U, cell, act, reverse, masked, within);
    if (cell == kLstm) throw std::invalid_argument("the LSTM's state is not in a: use PiecesForward");
    check_chunk(chunk, kernel);
    const size_t Bp = size_t(s.B) * s.p;
    std::unique_ptr<float[]> states(new float[(size_t(piece_count(s, chunk)) + 1) * Bp]);  // starts, then aT
    forward_pieces(s, chunk, inputs_of(s, x, a0, c0, W, U, b, c_n, lengths), a->typed_data(),
                   states.get() + piece_count(s, chunk) * Bp, nullptr, states.get(), nullptr);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("rnnlab forward in pieces: ") + e.what());
  }
  return ffi::Error::Success();
}

// The layer's inputs, first in every whole-sequence call: x (B, T, k), a0 (B, p), c0 (B, p; LSTM only),
// W_a (G·p, k), U_a (G·p, p), b_a (G·p,), c_n (p,; GRU reset_after only), lengths (B,; masked LSTM only).
auto bind_layer_inputs() {
  return ffi::Ffi::Bind()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<S32>();
}

// A backward's gradients after the input's: da0, dc0, dW_a, dU_a, db_a, dc_n.
template <class Binding>
auto with_state_and_weight_grads(Binding b) {
  return std::move(b).template Ret<F32>()
      .template Ret<F32>()
      .template Ret<F32>()
      .template Ret<F32>()
      .template Ret<F32>()
      .template Ret<F32>();
}

// What the engine compiles for (engine.py's Config).
template <class Binding>
auto with_layer_attrs(Binding b) {
  return std::move(b).template Attr<int32_t>("cell")
      .template Attr<int32_t>("act")
      .template Attr<int32_t>("reverse")
      .template Attr<int32_t>("masked")
      .template Attr<int32_t>("kernel")
      .template Attr<int32_t>("within");
}

}  // namespace
}  // namespace rnnlab

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabForward, rnnlab::Forward,
                              rnnlab::with_layer_attrs(rnnlab::bind_layer_inputs()
                                                           .Ret<rnnlab::F32>()  // a (B, T, p)
                                                           .Ret<rnnlab::F32>()  // aT (B, p)
                                                           .Ret<rnnlab::F32>()  // cT (B, p)
                                                           .Ret<ffi::Buffer<ffi::U8>>()   // workspace
                                                           .Ret<ffi::Buffer<ffi::U8>>())  // scratchpad
                                  .Attr<int32_t>("train"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabBackward, rnnlab::Backward,
                              rnnlab::with_layer_attrs(
                                  rnnlab::with_state_and_weight_grads(rnnlab::bind_layer_inputs()
                                                                          .Arg<rnnlab::F32>()  // a
                                                                          .Arg<rnnlab::F32>()  // aT
                                                                          .Arg<rnnlab::F32>()  // cT
                                                                          .Arg<ffi::Buffer<ffi::U8>>()  // workspace
                                                                          .Arg<rnnlab::F32>()  // da
                                                                          .Arg<rnnlab::F32>()  // daT
                                                                          .Arg<rnnlab::F32>()  // dcT
                                                                          .Ret<rnnlab::F32>())  // dx
                                      .Ret<ffi::Buffer<ffi::U8>>()));  // scratchpad

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabKernelBackward, rnnlab::KernelBackward,
                              rnnlab::with_layer_attrs(
                                  rnnlab::with_state_and_weight_grads(rnnlab::bind_layer_inputs()
                                                                          .Arg<ffi::Buffer<ffi::U8>>()  // workspace
                                                                          .Arg<rnnlab::F32>()  // da
                                                                          .Arg<rnnlab::F32>()  // daT
                                                                          .Arg<rnnlab::F32>()  // dcT
                                                                          .Ret<rnnlab::F32>()))  // dx, or 1 float
                                  .Attr<int32_t>("with_dx"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabPiecesForward, rnnlab::PiecesForward,
                              rnnlab::with_layer_attrs(rnnlab::bind_layer_inputs()
                                                           .Ret<rnnlab::F32>()   // a (B, T, p)
                                                           .Ret<rnnlab::F32>()   // aT (B, p)
                                                           .Ret<rnnlab::F32>()   // cT (B, p)
                                                           .Ret<rnnlab::F32>()   // a_starts (n, B, p)
                                                           .Ret<rnnlab::F32>())  // c_starts (n, B, p)
                                  .Attr<int32_t>("chunk"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabPiecesBackward, rnnlab::PiecesBackward,
                              rnnlab::with_layer_attrs(
                                  rnnlab::with_state_and_weight_grads(rnnlab::bind_layer_inputs()
                                                                          .Arg<rnnlab::F32>()  // a_starts
                                                                          .Arg<rnnlab::F32>()  // c_starts
                                                                          .Arg<rnnlab::F32>()  // da
                                                                          .Arg<rnnlab::F32>()  // daT
                                                                          .Arg<rnnlab::F32>()  // dcT
                                                                          .Ret<rnnlab::F32>()))  // dx
                                  .Attr<int32_t>("chunk"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabPiecesForwardA, rnnlab::PiecesForwardA,
                              rnnlab::with_layer_attrs(rnnlab::bind_layer_inputs().Ret<rnnlab::F32>())  // a
                                  .Attr<int32_t>("chunk"));

// sizes[0..3] = workspace, training scratchpad, inference scratchpad, backward scratchpad (bytes) on the
// kernel (`kernel` 1; its temporaries come from its own pool: 0) or on oneDNN (0; builds and caches the
// plan). Returns 0, or -1 with a message in `error`.
extern "C" int rnnlab_sizes(int cell, int act, int reverse, int masked, int kernel, int B, int T, int k, int p,
                            int64_t* sizes, char* error, int error_len) {
  try {
    const rnnlab::Shape s{cell, act, reverse, masked, B, T, k, p};
    if (kernel) {
      sizes[0] = int64_t(rnnlab::Kernel(s).workspace_bytes());
      sizes[1] = sizes[2] = sizes[3] = 0;
    } else {
      const rnnlab::Plan& plan = rnnlab::plan_for(s);
      sizes[0] = int64_t(plan.workspace_bytes());
      sizes[1] = int64_t(plan.train_scratch_bytes());
      sizes[2] = int64_t(plan.infer_scratch_bytes());
      sizes[3] = int64_t(plan.backward_scratch_bytes());
    }
    return 0;
  } catch (const std::exception& e) {
    std::strncpy(error, e.what(), size_t(error_len) - 1);
    error[error_len - 1] = '\0';
    return -1;
  }
}

// Bytes held by the kernel's pool of temporaries, which XLA does not see (for memory figures).
extern "C" int64_t rnnlab_scratch_bytes() { return int64_t(rnnlab::scratch_bytes()); }

// The vector width (floats) of the LSTM's in-register step (lstm_registers.h) on this CPU; 0 where it
// does not run.
extern "C" int rnnlab_lstm_registers_width() { return rnnlab::lstm_registers_width(); }
