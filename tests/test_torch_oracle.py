"""rnnlab's layers equal PyTorch's nn.RNN/GRU/LSTM with the same weights: outputs, final states, gradients."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnlab
from torch_oracle import build, run


def flatten_finals(stack, finals):
    """[state per direction per layer] in PyTorch's order: layer 0 fwd, layer 0 bwd, layer 1 fwd, ..."""
    out = []
    for layer, final in zip(stack.layers, finals, strict=True):
        out.extend(final if isinstance(layer, rnnlab.Bidirectional) else [final])
    return out


def cells_in_torch_order(stack):
    for i, layer in enumerate(stack.layers):
        if isinstance(layer, rnnlab.Bidirectional):
            yield i, "", layer.forward.cell
            yield i, "_reverse", layer.backward.cell
        else:
            yield i, "", layer.cell


case = st.fixed_dictionaries({
    "kind": st.sampled_from(["elman", "elman-relu", "gru", "lstm"]),
    "B": st.integers(1, 4),
    "T": st.integers(1, 7),
    "k": st.integers(1, 5),
    "p": st.integers(1, 6),
    "layers": st.integers(1, 2),
    "bidirectional": st.booleans(),
    "seed": st.integers(0, 2**16),
})


def make_case(c):
    kind, nonlinearity = ("elman", "relu") if c["kind"] == "elman-relu" else (c["kind"], "tanh")
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["B"], c["T"], c["k"])).astype(np.float32)
    lengths = rng.integers(1, c["T"] + 1, size=c["B"])
    lengths[rng.integers(c["B"])] = c["T"]  # PyTorch's packing keeps T only if one sequence is full
    module = build(kind, c["k"], c["p"], c["layers"], c["bidirectional"], nonlinearity, seed=c["seed"])
    return kind, module, x, lengths, rng


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case)
def test_outputs_and_final_states_equal_pytorch(c):
    kind, module, x, lengths, _ = make_case(c)
    stack = rnnlab.from_torch(module)
    a, finals = eqx.filter_jit(stack)(jnp.asarray(x), jnp.asarray(lengths))
    out, h_n, c_n, _ = run(module, x, lengths)
    np.testing.assert_allclose(np.asarray(a), out.detach().numpy(), atol=1e-5)
    states = flatten_finals(stack, finals)
    h = np.stack([s[0] if kind == "lstm" else s for s in states])
    np.testing.assert_allclose(h, h_n.detach().numpy(), atol=1e-5)
    if kind == "lstm":
        np.testing.assert_allclose(np.stack([s[1] for s in states]), c_n.detach().numpy(), atol=1e-5)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case)
def test_gradients_equal_pytorch_autograd(c):
    kind, module, x, lengths, rng = make_case(c)
    stack = rnnlab.from_torch(module)
    D = 2 if c["bidirectional"] else 1
    w_out = rng.standard_normal((c["B"], c["T"], D * c["p"])).astype(np.float32)
    w_fin = rng.standard_normal((c["layers"] * D, c["B"], c["p"])).astype(np.float32)

    def loss(stack, x):
        a, finals = stack(x, jnp.asarray(lengths))
        states = flatten_finals(stack, finals)
        h = jnp.stack([s[0] if kind == "lstm" else s for s in states])
        return jnp.sum(a * w_out) + jnp.sum(h * w_fin)

    g_stack, g_x = eqx.filter_jit(jax.grad(loss, argnums=(0, 1)))(stack, jnp.asarray(x))

    out, h_n, _, xt = run(module, x, lengths, x_requires_grad=True)
    (torch.sum(out * torch.from_numpy(w_out)) + torch.sum(h_n * torch.from_numpy(w_fin))).backward()

    np.testing.assert_allclose(np.asarray(g_x), xt.grad.numpy(), atol=1e-4)
    p = c["p"]
    for (i, suffix, cell) in cells_in_torch_order(g_stack):
        grad = {n: getattr(module, f"{n}_l{i}{suffix}").grad.numpy()
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        np.testing.assert_allclose(np.asarray(cell.W_a), grad["weight_ih"], atol=1e-4)
        np.testing.assert_allclose(np.asarray(cell.U_a), grad["weight_hh"], atol=1e-4)
        # b_a = bias_ih + bias_hh (GRU: only the r, z rows of bias_hh), so dL/db_a = dL/dbias_ih.
        np.testing.assert_allclose(np.asarray(cell.b_a), grad["bias_ih"], atol=1e-4)
        if kind == "gru":
            np.testing.assert_allclose(np.asarray(cell.c_n), grad["bias_hh"][2 * p:], atol=1e-4)
        else:
            np.testing.assert_allclose(np.asarray(cell.b_a), grad["bias_hh"], atol=1e-4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case)
def test_from_torch_then_to_torch_round_trips(c):
    kind, module, x, _, _ = make_case(c)
    stack = rnnlab.from_torch(module)
    back = rnnlab.to_torch(stack)
    assert type(back) is type(module)
    assert (back.num_layers, back.bidirectional, back.hidden_size, back.input_size) == (
        module.num_layers, module.bidirectional, module.hidden_size, module.input_size)
    if kind == "elman":
        assert back.nonlinearity == module.nonlinearity
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(x))[0].numpy(), module(torch.from_numpy(x))[0].numpy(),
                                   atol=1e-6)
    # rnnlab -> torch -> rnnlab gives back the very same arrays.
    again = rnnlab.from_torch(back)
    for leaf_a, leaf_b in zip(jax.tree.leaves(stack), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))
    assert jax.tree.structure(stack) == jax.tree.structure(again)


def test_to_torch_refuses_what_pytorch_cannot_express():
    key = jax.random.key(0)
    import pytest
    with pytest.raises(ValueError, match="reset_after=False"):
        rnnlab.to_torch(rnnlab.RNN("gru", 3, 4, reset_after=False, key=key))
    with pytest.raises(ValueError, match="softplus"):
        rnnlab.to_torch(rnnlab.RNN("elman", 3, 4, activation="softplus", key=key))
    with pytest.raises(ValueError, match="a_0"):
        rnnlab.to_torch(rnnlab.RNN("lstm", 3, 4, learn_a_0=True, key=key))
    with pytest.raises(TypeError, match=r"nn\.RNN, GRU or LSTM"):
        rnnlab.from_torch(torch.nn.Linear(3, 4))
