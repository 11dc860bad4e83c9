"""The recurrence against hand-written loops, finite differences, and its invariants."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.layers import Recurrent, reverse_within

KEY = jax.random.key(0)


def softplus_np(z):
    return np.log1p(np.exp(z))


def seed_loop(W_a, U_a, b_a, x, a_0, f_a):
    """The seed's pseudocode, in NumPy: for t in 1..T: a[t] = f_a(W_a x[t] + U_a a[t-1] + b_a)."""
    a = [a_0]
    for t in range(len(x)):
        a.append(f_a(W_a @ x[t] + U_a @ a[-1] + b_a))
    return np.stack(a[1:])


def test_elman_with_a_user_activation_equals_the_seed_loop():
    cell = rnnlab.Elman(features=4, units=3, activation=jax.nn.softplus, key=KEY)
    x = np.random.default_rng(1).standard_normal((9, 4)).astype(np.float32)
    a, a_T = Recurrent(cell)(x)
    expected = seed_loop(*(np.asarray(w, np.float64) for w in (cell.W_a, cell.U_a, cell.b_a)), x,
                         np.zeros(3), softplus_np)
    np.testing.assert_allclose(np.asarray(a), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(a_T), expected[-1], atol=1e-5)


def test_readout_is_f_y_of_W_y_a_plus_b_y():
    readout = rnnlab.Readout(units=3, outputs=2, activation="sigmoid", key=KEY)
    a = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    W_y, b_y = np.asarray(readout.W_y), np.asarray(readout.b_y)
    np.testing.assert_allclose(np.asarray(readout(a)), 1 / (1 + np.exp(-(a @ W_y.T + b_y))), atol=1e-6)


@pytest.mark.parametrize("kind", ["elman", "gru", "gru-cho", "lstm"])
def test_gradient_matches_float64_finite_differences(kind):
    with jax.enable_x64(True):
        key = jax.random.key(3)
        cell = (rnnlab.GRU(3, 4, reset_after=False, key=key) if kind == "gru-cho"
                else rnnlab.make_cell(kind, 3, 4, activation=jax.nn.softplus, key=key))
        cell = jax.tree.map(lambda w: w.astype(jnp.float64) if eqx.is_array(w) else w, cell)
        layer = Recurrent(cell, learn_a_0=True)
        layer = eqx.tree_at(lambda m: m.a_0, layer, jnp.linspace(-0.5, 0.5, 4, dtype=jnp.float64))
        x = jax.random.normal(jax.random.key(4), (2, 6, 3), jnp.float64)
        lengths = jnp.array([6, 4])
        w = jax.random.normal(jax.random.key(5), (2, 6, 4), jnp.float64)

        def loss(params):
            model = eqx.combine(params, static)
            a, _ = model(x, lengths)
            return jnp.sum(jnp.sin(a) * w)

        params, static = eqx.partition(layer, eqx.is_array)
        loss = jax.jit(loss)
        grads = jax.jit(jax.grad(loss))(params)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        g = jax.flatten_util.ravel_pytree(grads)[0]
        eps = 1e-6
        rng = np.random.default_rng(0)
        for i in rng.choice(flat.size, size=min(40, flat.size), replace=False):
            e = jnp.zeros_like(flat).at[i].set(eps)
            fd = (loss(unravel(flat + e)) - loss(unravel(flat - e))) / (2 * eps)
            np.testing.assert_allclose(float(g[i]), float(fd), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_parameter_count_does_not_depend_on_T(kind):
    layer = rnnlab.RNN(kind, features=20, units=10, key=KEY)
    before = sum(w.size for w in jax.tree.leaves(eqx.filter(layer, eqx.is_array)))
    for T in (5, 500):
        a, _ = eqx.filter_jit(layer)(jnp.ones((T, 20)))
        assert a.shape == (T, 10)  # p units at each of the T steps, whatever T is
    after = sum(w.size for w in jax.tree.leaves(eqx.filter(layer, eqx.is_array)))
    G = {"elman": 1, "gru": 3, "lstm": 4}[kind]
    assert before == after == G * (10 * 20 + 10 * 10 + 10) + (10 if kind == "gru" else 0)


@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_any_sequence(kind, bidirectional):
    rnn = rnnlab.RNN(kind, features=3, units=5, layers=2, bidirectional=bidirectional, key=KEY)
    rng = np.random.default_rng(6)
    lengths = np.array([7, 2, 5, 1])
    x = rng.standard_normal((4, 7, 3)).astype(np.float32)
    x[np.arange(7)[None, :] >= lengths[:, None]] = 99.0  # garbage in the padding must not leak in
    run = eqx.filter_jit(rnn)
    a, finals = run(x, lengths)
    for b, L in enumerate(lengths):
        a_b, finals_b = run(x[b, :L])
        np.testing.assert_allclose(np.asarray(a[b, :L]), np.asarray(a_b), atol=1e-5)
        assert np.all(np.asarray(a[b, L:]) == 0.0)
        for got, alone in zip(jax.tree.leaves(finals), jax.tree.leaves(finals_b), strict=True):
            np.testing.assert_allclose(np.asarray(got[b]), np.asarray(alone), atol=1e-5)


@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_step_repeated_T_times_equals_the_scan(kind):
    layer = Recurrent(rnnlab.make_cell(kind, 3, 4, key=KEY))
    x = np.random.default_rng(7).standard_normal((2, 6, 3)).astype(np.float32)
    a, final = layer(x)
    state = layer.initial_state(batch=2)
    step = eqx.filter_jit(layer.step)
    for t in range(6):
        state = step(state, x[:, t])
        np.testing.assert_allclose(np.asarray(layer.cell.hidden(state)), np.asarray(a[:, t]), atol=1e-6)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_reverse_reads_each_sequence_from_its_own_end():
    layer = Recurrent(rnnlab.Elman(2, 3, key=KEY), reverse=True)
    forward = Recurrent(layer.cell)
    x = np.random.default_rng(8).standard_normal((5, 2)).astype(np.float32)
    a, _ = layer(x[None], np.array([3]))
    a_fwd, _ = forward(x[2::-1])  # x_3, x_2, x_1 run forwards
    np.testing.assert_allclose(np.asarray(a[0, :3]), np.asarray(a_fwd[::-1]), atol=1e-6)
    assert np.all(np.asarray(a[0, 3:]) == 0)
    z = jnp.arange(6)
    np.testing.assert_array_equal(reverse_within(z, jnp.array(4)), [3, 2, 1, 0, 4, 5])
    np.testing.assert_array_equal(reverse_within(reverse_within(z, jnp.array(4)), jnp.array(4)), z)


def test_a_0_given_or_learned_starts_the_loop():
    cell = rnnlab.Elman(2, 3, key=KEY)
    x = np.ones((4, 2), np.float32)
    a_0 = np.array([0.5, -0.5, 0.25], np.float32)
    a, _ = Recurrent(cell)(x, a_0=a_0)
    expected = seed_loop(*(np.asarray(w) for w in (cell.W_a, cell.U_a, cell.b_a)), x, a_0, np.tanh)
    np.testing.assert_allclose(np.asarray(a), expected, atol=1e-6)
    learned = eqx.tree_at(lambda m: m.a_0, Recurrent(cell, learn_a_0=True), jnp.asarray(a_0))
    np.testing.assert_allclose(np.asarray(learned(x)[0]), expected, atol=1e-6)
    grads = jax.grad(lambda m: jnp.sum(m(x)[0]))(learned)
    assert np.any(np.asarray(grads.a_0) != 0)  # the learned a_0 trains


def test_gru_reset_before_matmul_is_cho_2014():
    cell = rnnlab.GRU(3, 2, reset_after=False, key=KEY)
    x_t, a = np.array([0.1, -0.2, 0.3], np.float32), np.array([0.5, -0.4], np.float32)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    (W_r, U_r, b_r), (W_z, U_z, b_z), (W_n, U_n, b_n) = (
        (np.asarray(w) for w in cell.gate(g)) for g in "rzn")
    r = sig(W_r @ x_t + U_r @ a + b_r)
    z = sig(W_z @ x_t + U_z @ a + b_z)
    n = np.tanh(W_n @ x_t + U_n @ (r * a) + b_n)
    np.testing.assert_allclose(np.asarray(cell(x_t, a)), (1 - z) * n + z * a, atol=1e-6)
    assert cell.c_n is None


def test_dropout_between_layers_only_with_a_key():
    rnn = rnnlab.RNN("elman", 3, 8, layers=2, dropout=0.5, key=KEY)
    x = np.ones((1, 4, 3), np.float32)
    a_eval, _ = rnn(x)
    a_eval2, _ = rnn(x)
    np.testing.assert_array_equal(np.asarray(a_eval), np.asarray(a_eval2))
    a_train, _ = rnn(x, key=jax.random.key(1))
    assert not np.allclose(np.asarray(a_train), np.asarray(a_eval))
    one_layer = rnnlab.RNN("elman", 3, 8, layers=1, dropout=0.5, key=KEY)
    np.testing.assert_array_equal(np.asarray(one_layer(x, key=jax.random.key(1))[0]), np.asarray(one_layer(x)[0]))


@pytest.mark.parametrize("kind", ["elman", "lstm"])
@pytest.mark.parametrize("chunk", [20, 23])  # (23: a last piece of 9 steps)
def test_chunked_rematerialisation_changes_nothing_but_memory(kind, chunk):
    T, k, p = 400, 3, 8
    x = jax.random.normal(jax.random.key(9), (T, k))
    plain = Recurrent(rnnlab.make_cell(kind, k, p, key=KEY))
    chunked = Recurrent(plain.cell, chunk=chunk)

    def loss(layer, x):
        a, final = layer(x)
        return jnp.sum(jnp.sin(a[::50])) + jnp.sum(jax.tree.leaves(final)[0])

    for layer_args in [(x,), (x[None].repeat(2, 0), np.array([T, 250]))]:  # the scan, then a batch (fused on CPU)
        a, final = eqx.filter_jit(plain)(*layer_args)
        a_c, final_c = eqx.filter_jit(chunked)(*layer_args)
        np.testing.assert_allclose(np.asarray(a_c), np.asarray(a), atol=1e-5)
        for u, v in zip(jax.tree.leaves(final_c), jax.tree.leaves(final), strict=True):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-5)
    g = eqx.filter_jit(eqx.filter_grad(loss))(plain, x)
    g_c = eqx.filter_jit(eqx.filter_grad(loss))(chunked, x)
    for u, v in zip(jax.tree.leaves(g_c), jax.tree.leaves(g), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-4)  # sums over 400 steps

    def kept(layer) -> int:  # floats the backward pass keeps from the forward
        params, static = eqx.partition(layer, eqx.is_array)
        f = lambda params, x: loss(eqx.combine(params, static), x)  # noqa: E731
        _, backward = jax.vjp(f, params, x)  # a pytree whose leaves are what it keeps
        return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(backward))

    assert kept(chunked) < kept(plain) / 3  # x and T/C states instead of T steps' gates and states




# ---------------------------------------------------------------------------- a full initial state, state_0


def _state_0(kind: str, p: int, B: int, seed: int):
    """A nonzero state_0 for a batch of B: a_0, and an LSTM's c_0 beside it."""
    rng = np.random.default_rng(seed)
    a_0 = jnp.asarray(rng.uniform(-0.9, 0.9, (B, p)).astype(np.float32))
    c_0 = jnp.asarray(rng.uniform(-2.0, 2.0, (B, p)).astype(np.float32))
    return (a_0, c_0) if kind == "lstm" else a_0


@pytest.mark.parametrize("engine", ["scan", "fused"])
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_state_0_starts_the_loop_as_pytorchs_h_0_and_c_0(kind, engine):
    import torch

    from rnnlab.interop import to_torch

    if engine == "fused" and rnnlab.fast.why_not(rnnlab.make_cell(kind, 3, 5, key=KEY)) is not None:
        pytest.skip("the fused engine is not built here")
    layer = Recurrent(rnnlab.make_cell(kind, 3, 5, key=KEY), engine=engine)
    x = np.random.default_rng(11).standard_normal((2, 7, 3)).astype(np.float32)
    state_0 = _state_0(kind, 5, 2, seed=12)
    a, final = layer(x, state_0=state_0)
    module = to_torch(rnnlab.layers.Stack([layer]))
    given = tuple(torch.from_numpy(np.array(s))[None] for s in jax.tree.leaves(state_0))
    with torch.no_grad():
        out, state = module(torch.from_numpy(x), given if kind == "lstm" else given[0])
    np.testing.assert_allclose(np.asarray(a), out.numpy(), atol=1e-5)
    want = state if kind == "lstm" else (state,)
    for got, w in zip(jax.tree.leaves(final), want, strict=True):
        np.testing.assert_allclose(np.asarray(got), w[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_state_0_on_the_engine_equals_the_scan_and_its_gradients(kind):
    layer = Recurrent(rnnlab.make_cell(kind, 3, 5, key=KEY))
    if rnnlab.fast.why_not(layer.cell) is not None:
        pytest.skip("the fused engine is not built here")
    x = np.random.default_rng(13).standard_normal((3, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    state_0 = _state_0(kind, 5, 3, seed=14)

    def loss(layer, state_0, engine):
        a, final = rnnlab.layers.with_engine(layer, engine)(x, lengths, state_0=state_0)
        return jnp.sum(a * jnp.cos(a)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(final))

    for wrt in (0, 1):  # the weights, and state_0 itself
        fused = jax.grad(loss, argnums=wrt)(layer, state_0, "fused")
        scan = jax.grad(loss, argnums=wrt)(layer, state_0, "scan")
        for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(scan), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    np.testing.assert_allclose(loss(layer, state_0, "fused"), loss(layer, state_0, "scan"), rtol=1e-5)


@pytest.mark.parametrize("engine", ["scan", "fused"])
@pytest.mark.parametrize("kind", ["elman", "gru", "lstm"])
def test_a_sequence_in_two_halves_carrying_state_T_equals_it_whole(kind, engine):
    """The invariant truncated backpropagation through time rests on: the second half, started from the
    first half's state_T, gives what the whole sequence gives at its steps."""
    layer = Recurrent(rnnlab.make_cell(kind, 3, 5, key=KEY), engine=engine)
    if engine == "fused" and rnnlab.fast.why_not(layer.cell) is not None:
        pytest.skip("the fused engine is not built here")
    x = np.random.default_rng(15).standard_normal((2, 9, 3)).astype(np.float32)
    state_0 = _state_0(kind, 5, 2, seed=16)
    a, final = layer(x, state_0=state_0)
    a_1, half = layer(x[:, :4], state_0=state_0)
    a_2, final_2 = layer(x[:, 4:], state_0=half)
    np.testing.assert_allclose(np.asarray(jnp.concatenate([a_1, a_2], 1)), np.asarray(a), atol=1e-6)
    for got, want in zip(jax.tree.leaves(final_2), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    # one sequence (T, k) takes a (p,) state the same way; a (p,) state_0 serves every row of a batch
    one, _ = layer(x[1], state_0=jax.tree.map(lambda s: s[1], state_0))
    np.testing.assert_allclose(np.asarray(one), np.asarray(a[1]), atol=1e-6)
    shared, _ = layer(x, state_0=jax.tree.map(lambda s: s[1], state_0))
    np.testing.assert_allclose(np.asarray(shared[1]), np.asarray(a[1]), atol=1e-6)


def test_state_0_refused_beside_a_0_or_of_the_wrong_shape_in_one_line():
    lstm = Recurrent(rnnlab.LSTM(3, 4, key=KEY))
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="give a_0 or state_0, not both"):
        lstm(x, a_0=np.zeros(4, np.float32), state_0=(jnp.zeros(4), jnp.zeros(4)))
    with pytest.raises(rnnlab.ShapeError, match=r"^expected state_0 as a pair \(a, c\), each of shape \(p=4,\) "
                       r"or \(B=2, p=4\) \(the lstm cell's state\); got \(2, 4\)$"):
        lstm(x, state_0=jnp.zeros((2, 4)))
    with pytest.raises(rnnlab.ShapeError, match=r"got \(\(2, 4\), \(3, 4\)\)$"):
        lstm(x, state_0=(jnp.zeros((2, 4)), jnp.zeros((3, 4))))
    elman = Recurrent(rnnlab.Elman(3, 4, key=KEY))
    with pytest.raises(rnnlab.ShapeError, match=r"^expected state_0 as a of shape \(p=4,\) "):
        elman(x, state_0=(jnp.zeros(4), jnp.zeros(4)))
    stack = rnnlab.RNN("gru", 3, 4, layers=2, key=KEY)
    with pytest.raises(ValueError, match=r"state_0 needs one entry per layer \(2\); got 1"):
        stack(x, state_0=[jnp.zeros(4)])
