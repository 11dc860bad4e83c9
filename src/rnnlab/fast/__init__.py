"""The fused CPU path: whole sequences on a compiled engine (a hand-written kernel, and oneDNN's RNN
primitives for the GRU without reset_after), behind XLA FFI custom calls.

`Recurrent` uses it on its own for a batch (B, T, k) on CPU where the cell has an engine (Elman with
tanh, relu or sigmoid; GRU; LSTM; float32), and the scan otherwise. RNNLAB_FAST=0 turns it off.

    fast.available()                        # the compiled engine loaded
    fast.sequence(cell, x, lengths, state_0, reverse=False, chunk=None)   # what Recurrent calls; chunk=C
                                            # rematerialises in pieces of C steps (C about √T for least memory)
    fast.stepper(layer)                     # a jitted streaming step, state buffers donated
    fast.Stream(layer)                      # the same step from Python on NumPy, without JAX's dispatch
"""

from rnnlab.fast.engine import LOAD_ERROR, available
from rnnlab.fast.layer import applies, config, enabled, sequence
from rnnlab.fast.step import Stream, stepper

__all__ = ["LOAD_ERROR", "Stream", "applies", "available", "config", "enabled", "sequence", "stepper"]
