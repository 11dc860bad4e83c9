"""The fused CPU path: whole sequences on a compiled engine (a hand-written kernel, and oneDNN's RNN
primitives for the GRU without reset_after), behind XLA FFI custom calls.

`Recurrent(cell, engine="auto")` uses it on its own for a batch (B, T, k) on CPU where the cell has an
engine (Elman with tanh, relu or sigmoid; GRU; LSTM; float32), and the scan otherwise; RNNLAB_FAST=0 makes
"auto" the scan. engine="fused" asks for it (an error says why where it cannot run), engine="scan" never.

    fast.available()                        # the compiled engine loaded
    fast.why_not(cell, x)                   # why the engine cannot run this cell (None: it can)
    fast.sequence(cell, x, lengths, state_0, reverse=False, chunk=None)   # what Recurrent calls; chunk=C
                                            # rematerialises in pieces of C steps (C about √T for least memory)
    fast.stepper(layer)                     # a jitted streaming step, state buffers donated
    fast.Stream(layer)                      # the same step from Python on NumPy, without JAX's dispatch
    fast.bag(H, g)                          # the subword mean of x_t (TextClassifier.embed) in C++
"""

from rnnlab.fast.engine import LOAD_ERROR, available, bag
from rnnlab.fast.layer import ENGINES, applies, bag_on_engine, config, enabled, sequence, uses_engine, why_not
from rnnlab.fast.step import Stream, stepper

__all__ = ["ENGINES", "LOAD_ERROR", "Stream", "applies", "available", "bag", "bag_on_engine", "config", "enabled",
           "sequence", "stepper", "uses_engine", "why_not"]
