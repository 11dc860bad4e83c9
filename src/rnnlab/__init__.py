"""rnnlab: recurrent neural networks built from their equations.

    a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)        y_t = f_y(W_y a_t + b_y)

x_t has k features, the state a_t has p units, and the same weights serve each of the T timesteps.
"""

from rnnlab import _moved
from rnnlab._checks import ShapeError
from rnnlab.cells import GRU, LSTM, Cell, Elman, MinGRU, MinLSTM, Readout, activation_fn, make_cell
from rnnlab.inference import Run
from rnnlab.interop import from_torch, to_torch
from rnnlab.layers import RNN, Bidirectional, Recurrent, Stack
from rnnlab.runs import load_run
from rnnlab.teach import explain_views as _explain_views  # noqa: F401  (how an Explanation prints)
from rnnlab.teach.explain import explain

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bidirectional",
    "Cell",
    "Elman",
    "MinGRU",
    "MinLSTM",
    "Readout",
    "Recurrent",
    "Run",
    "ShapeError",
    "Stack",
    "activation_fn",
    "explain",
    "from_torch",
    "load_run",
    "make_cell",
    "to_torch",
]
__version__ = "0.1.0"

_moved.install()  # the old module paths (rnnlab.inspect, rnnlab.experiments, ...) as deprecated aliases
