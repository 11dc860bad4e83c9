"""PyTorch's `nn.RNN`, `nn.GRU` and `nn.LSTM` to rnnlab layers and back, weight for weight.

The mapping, for layer l and direction suffix s ("" forwards, "_reverse" backwards):

    torch                         rnnlab (cell of layers[l], or its .forward/.backward)
    weight_ih_l{l}{s}  (G·p, k)   W_a
    weight_hh_l{l}{s}  (G·p, p)   U_a
    bias_ih + bias_hh  (G·p,)     b_a            (PyTorch adds two biases; rnnlab has one)
    bias_hh, GRU rows n           c_n            (GRU: the bias inside the reset, r ⊙ (U_n a + c_n))
    nonlinearity       tanh|relu  Elman activation

Gate order is PyTorch's in both: GRU (r, z, n), LSTM (i, f, g, o). Going back, `to_torch` puts b_a in
`bias_ih` and zeros (or c_n) in `bias_hh`: the module computes the same function, and `from_torch` of it
gives back the same arrays. torch is imported only when these functions are called.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.cells import GRU, LSTM, Elman, MinCell
from rnnlab.layers import Bidirectional, Recurrent, Stack

_KIND_OF_TORCH = {"RNN": "elman", "GRU": "gru", "LSTM": "lstm"}


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _cell_from_torch(module, kind: str, layer: int, suffix: str):
    p, G = module.hidden_size, {"elman": 1, "gru": 3, "lstm": 4}[kind]
    W = jnp.asarray(_np(getattr(module, f"weight_ih_l{layer}{suffix}")))
    U = jnp.asarray(_np(getattr(module, f"weight_hh_l{layer}{suffix}")))
    if module.bias:
        b_ih = _np(getattr(module, f"bias_ih_l{layer}{suffix}"))
        b_hh = _np(getattr(module, f"bias_hh_l{layer}{suffix}"))
    else:
        b_ih = b_hh = np.zeros(G * p, dtype=_np(module.weight_ih_l0).dtype)
    key = jax.random.key(0)  # placeholder weights, replaced below
    k = W.shape[1]
    if kind == "elman":
        cell = Elman(k, p, module.nonlinearity, key=key)
        b = b_ih + b_hh
    elif kind == "gru":
        cell = GRU(k, p, reset_after=True, key=key)
        b = np.concatenate([b_ih[: 2 * p] + b_hh[: 2 * p], b_ih[2 * p :]])
        cell = eqx_set(cell, c_n=jnp.asarray(b_hh[2 * p :]))
    else:
        cell = LSTM(k, p, key=key)
        b = b_ih + b_hh
    return eqx_set(cell, W_a=W, U_a=U, b_a=jnp.asarray(b))


def eqx_set(module, **fields):
    """A copy of an Equinox module with some fields replaced."""
    import equinox as eqx

    names = list(fields)
    return eqx.tree_at(lambda m: [getattr(m, n) for n in names], module, [fields[n] for n in names],
                       is_leaf=lambda x: x is None)


def from_torch(module) -> Stack:
    """The rnnlab `Stack` computing what `module` (torch.nn.RNN, GRU or LSTM) computes.

    Any num_layers, bidirectional, nonlinearity and bias. batch_first does not matter: rnnlab layers take
    (B, T, k). dropout carries over. proj_size (LSTM projections) is not supported.
    """
    name = type(module).__name__
    if name not in _KIND_OF_TORCH:
        raise TypeError(f"from_torch takes torch.nn.RNN, GRU or LSTM; got {name}")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM with proj_size > 0 has no rnnlab equivalent")
    kind = _KIND_OF_TORCH[name]
    layers = []
    for layer in range(module.num_layers):
        fwd = Recurrent(_cell_from_torch(module, kind, layer, ""))
        if module.bidirectional:
            bwd = Recurrent(_cell_from_torch(module, kind, layer, "_reverse"), reverse=True)
            layers.append(Bidirectional(fwd, bwd))
        else:
            layers.append(fwd)
    return Stack(layers, float(module.dropout))


def _directions(layer) -> list[tuple[Recurrent, str]]:
    if isinstance(layer, Bidirectional):
        return [(layer.forward, ""), (layer.backward, "_reverse")]
    return [(layer, "")]


def to_torch(stack: Stack | Recurrent | Bidirectional, *, batch_first: bool = True):
    """A torch.nn.RNN/GRU/LSTM computing what `stack` computes (batch_first=True by default, as rnnlab).

    Raises for what PyTorch cannot express: an Elman activation other than tanh/relu, a GRU with
    reset_after=False, a min cell (MinGRU, MinLSTM), a learned a_0, mixed cell types or sizes across layers.
    """
    import torch

    if not isinstance(stack, Stack):
        stack = Stack([stack])
    cells = [(rec, suffix, i) for i, layer in enumerate(stack.layers) for rec, suffix in _directions(layer)]
    first = cells[0][0].cell
    kind = first.kind
    if any(isinstance(rec.cell, MinCell) for rec, _, _ in cells):
        raise ValueError("PyTorch has no minGRU or minLSTM layer: a min cell has no torch.nn equivalent")
    bidirectional = isinstance(stack.layers[0], Bidirectional)
    for rec, _, i in cells:
        c = rec.cell
        if c.kind != kind or c.units != first.units:
            raise ValueError(f"layer {i} is a {c.kind} of p={c.units}; PyTorch needs every layer alike "
                             f"({kind}, p={first.units})")
        if isinstance(stack.layers[i], Bidirectional) != bidirectional:
            raise ValueError("PyTorch needs every layer bidirectional or none")
        if rec.a_0 is not None:
            raise ValueError("a learned a_0 has no place in torch.nn modules (pass it as h_0 instead)")
        if kind == "gru" and not c.reset_after:
            raise ValueError("PyTorch's GRU applies the reset after the matmul; this GRU has reset_after=False")
        if kind == "elman" and c.activation not in ("tanh", "relu"):
            raise ValueError(f"PyTorch's RNN has tanh or relu; this Elman cell uses {c.activation!r}")
    kw = dict(input_size=first.features, hidden_size=first.units, num_layers=len(stack.layers),
              bidirectional=bidirectional, batch_first=batch_first, dropout=stack.dropout)
    if kind == "elman":
        module = torch.nn.RNN(nonlinearity=first.activation, **kw)
    else:
        module = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind](**kw)
    p = first.units
    with torch.no_grad():
        for rec, suffix, i in cells:
            c = rec.cell
            b_hh = np.zeros(c.b_a.shape, dtype=np.asarray(c.b_a).dtype)
            if kind == "gru":
                b_hh[2 * p :] = np.asarray(c.c_n)
            for name, value in [("weight_ih", c.W_a), ("weight_hh", c.U_a), ("bias_ih", c.b_a), ("bias_hh", b_hh)]:
                target = getattr(module, f"{name}_l{i}{suffix}")
                target.copy_(torch.from_numpy(np.array(value, dtype=np.float32 if target.dtype == torch.float32
                                                       else np.float64)))
    return module
