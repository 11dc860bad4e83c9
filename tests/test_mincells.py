"""MinGRU and MinLSTM against their equations looped in NumPy (outputs and hand-derived gradients),
float64 finite differences, and the invariants every layer keeps (padding, step, reverse, stacks)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab import fast
from rnnlab.cells import MinCell, MinGRU, MinLSTM
from rnnlab.layers import Bidirectional, Recurrent, Stack
from rnnlab.linear_scan import depth, linear_scan

KINDS = ("mingru", "minlstm")
SCANS = ("sequential", "associative")


def sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


def weights(cell) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(cell.W_a, np.float64), np.asarray(cell.b_a, np.float64)


def loop(kind, W_a, b_a, x, a_0):
    """The paper's equations, step by step in NumPy (minLSTM's f / (f + i) written as is). Returns a
    (T, p) and, per step, what the hand-derived backward needs."""
    p = W_a.shape[0] // (2 if kind == "mingru" else 3)
    a, saved = [a_0], []
    for x_t in x:
        z = W_a @ x_t + b_a
        if kind == "mingru":
            gate, h = sigmoid(z[:p]), z[p:]
            a_t = (1 - gate) * a[-1] + gate * h
            saved.append((gate, h))
        else:
            f, i, h = sigmoid(z[:p]), sigmoid(z[p : 2 * p]), z[2 * p :]
            a_t = f / (f + i) * a[-1] + i / (f + i) * h
            saved.append((f, i, h))
        a.append(a_t)
    return np.stack(a[1:]), saved


def loop_gradients(kind, W_a, b_a, x, a_0, w):
    """∂L/∂(W_a, b_a, x, a_0) of L = Σ_t w_t · a_t, backpropagated through `loop` by hand."""
    a, saved = loop(kind, W_a, b_a, x, a_0)
    T, p = a.shape
    a_prev = np.concatenate([a_0[None], a[:-1]])
    dW, db, dx = np.zeros_like(W_a), np.zeros_like(b_a), np.zeros_like(x)
    G_next, alpha_next = np.zeros(p), np.zeros(p)
    for t in reversed(range(T)):
        G = w[t] + alpha_next * G_next  # ∂L/∂a_t, through every later step
        if kind == "mingru":
            gate, h = saved[t]
            d_gate = G * (h - a_prev[t])
            dz = np.concatenate([d_gate * gate * (1 - gate), G * gate])
            alpha = 1 - gate
        else:
            f, i, h = saved[t]
            s = f + i
            d_f_norm, d_i_norm = G * a_prev[t], G * h
            d_f = (d_f_norm - d_i_norm) * i / s**2
            d_i = (d_i_norm - d_f_norm) * f / s**2
            dz = np.concatenate([d_f * f * (1 - f), d_i * i * (1 - i), G * i / s])
            alpha = f / s
        dW += np.outer(dz, x[t])
        db += dz
        dx[t] = W_a.T @ dz
        G_next, alpha_next = G, alpha
    return dW, db, dx, alpha_next * G_next


def cell_of(kind, k, p, seed=0, scan="sequential", scale=1.0):
    cell = {"mingru": MinGRU, "minlstm": MinLSTM}[kind](k, p, scan=scan, key=jax.random.key(seed))
    return eqx.tree_at(lambda c: (c.W_a, c.b_a), cell, (cell.W_a * scale, cell.b_a * scale))


def with_scan(cell, scan):
    """The same weights, run by another scan (`scan` is static: a new cell)."""
    fresh = type(cell)(cell.features, cell.units, scan=scan, key=jax.random.key(0))
    return eqx.tree_at(lambda c: (c.W_a, c.b_a), fresh, (cell.W_a, cell.b_a))


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_scan_equals_the_equations_looped_in_numpy_outputs_and_every_gradient(kind, scan):
    k, p, T = 3, 5, 17
    cell = cell_of(kind, k, p, seed=1, scan=scan, scale=2.0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, k)).astype(np.float32)
    a_0 = rng.standard_normal(p).astype(np.float32)
    w = rng.standard_normal((T, p))
    W_a, b_a = weights(cell)
    expected, _ = loop(kind, W_a, b_a, x.astype(np.float64), a_0.astype(np.float64))
    a, a_T = Recurrent(cell)(x, a_0=a_0)
    np.testing.assert_allclose(np.asarray(a), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(a_T), expected[-1], rtol=1e-5, atol=1e-5)

    def loss(cell, x, a_0):
        return jnp.sum(jnp.asarray(w, jnp.float32) * Recurrent(cell)(x, a_0=a_0)[0])

    g_cell, g_x, g_a_0 = eqx.filter_jit(jax.grad(loss, argnums=(0, 1, 2)))(cell, jnp.asarray(x), jnp.asarray(a_0))
    dW, db, dx, da_0 = loop_gradients(kind, W_a, b_a, x.astype(np.float64), a_0.astype(np.float64), w)
    for got, want in ((g_cell.W_a, dW), (g_cell.b_a, db), (g_x, dx), (g_a_0, da_0)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_float64_finite_differences(kind, scan):
    with jax.enable_x64(True):
        cell = cell_of(kind, 3, 4, seed=3, scan=scan, scale=1.5)
        cell = jax.tree.map(lambda v: v.astype(jnp.float64) if eqx.is_array(v) else v, cell)
        rnn = Stack([Bidirectional(Recurrent(cell, learn_a_0=True), Recurrent(cell, reverse=True)),
                     Recurrent(cell_of(kind, 8, 4, seed=4, scan=scan))])
        rnn = jax.tree.map(lambda v: v.astype(jnp.float64) if eqx.is_array(v) else v, rnn)
        x = jax.random.normal(jax.random.key(5), (2, 6, 3), jnp.float64)
        lengths = jnp.array([6, 4])
        w = jax.random.normal(jax.random.key(6), (2, 6, 4), jnp.float64)
        params, static = eqx.partition(rnn, eqx.is_inexact_array)
        flat, unflatten = jax.flatten_util.ravel_pytree(params)

        def loss(flat):
            a, _ = eqx.combine(unflatten(flat), static)(x, lengths)
            return jnp.sum(w * a)

        loss = jax.jit(loss)
        grad = jax.jit(jax.grad(loss))(flat)
        direction = jax.random.normal(jax.random.key(7), flat.shape, jnp.float64)
        eps = 1e-6
        fd = (loss(flat + eps * direction) - loss(flat - eps * direction)) / (2 * eps)
        assert flat.dtype == jnp.float64
        np.testing.assert_allclose(float(grad @ direction), float(fd), rtol=1e-7)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_a_padded_batch_equals_each_sequence_alone(kind, scan, reverse):
    layer = Recurrent(cell_of(kind, 3, 4, seed=8, scan=scan), reverse=reverse)
    x = np.random.default_rng(9).standard_normal((3, 9, 3)).astype(np.float32)
    lengths = np.array([9, 5, 1])
    a, a_T = layer(x, lengths)
    for b, L in enumerate(lengths):
        alone, final = layer(x[b, :L])
        np.testing.assert_allclose(np.asarray(a[b, :L]), np.asarray(alone), atol=1e-6)
        np.testing.assert_allclose(np.asarray(a_T[b]), np.asarray(final), atol=1e-6)
        assert not np.asarray(a[b, L:]).any()  # a_t is zero past each sequence's end
    grads = eqx.filter_jit(jax.grad(lambda lay: jnp.sum(lay(x, lengths)[0][1] ** 2)))(layer)
    alone = eqx.filter_jit(jax.grad(lambda lay: jnp.sum(lay(x[1, :5])[0] ** 2)))(layer)
    np.testing.assert_allclose(np.asarray(grads.cell.W_a), np.asarray(alone.cell.W_a), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_step_T_times_equals_the_whole_sequence(kind):
    layer = Recurrent(cell_of(kind, 3, 4, seed=10))
    x = np.random.default_rng(11).standard_normal((2, 12, 3)).astype(np.float32)
    a, a_T = layer(x)
    state = layer.initial_state(batch=2)
    for t in range(12):
        state = layer.step(state, x[:, t])
        np.testing.assert_allclose(np.asarray(layer.cell.hidden(state)), np.asarray(a[:, t]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(state), np.asarray(a_T), atol=1e-6)
    one = layer.initial_state()
    for t in range(12):
        one = layer.step(one, x[0, t])
    np.testing.assert_allclose(np.asarray(one), np.asarray(a_T[0]), atol=1e-6)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("kind", KINDS)
def test_one_timestep(kind, scan):
    cell = cell_of(kind, 3, 4, seed=12, scan=scan)
    x = np.random.default_rng(13).standard_normal((1, 3)).astype(np.float32)
    a, a_T = Recurrent(cell)(x)
    expected, _ = loop(kind, *weights(cell), x.astype(np.float64), np.zeros(4))
    assert a.shape == (1, 4)
    np.testing.assert_allclose(np.asarray(a), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a_T), np.asarray(cell(x[0], jnp.zeros(4))), atol=1e-7)
    assert depth(1, scan) == 0 if scan == "associative" else depth(1, scan) == 1


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("kind", KINDS)
def test_ten_thousand_steps_in_float32_stay_exact_and_stable(kind, scan):
    """T = 10 000 with saturated gates (scale 6: many α_t round to 0 or 1 in float32), against the loop
    in float64: outputs and gradients."""
    k, p, T = 2, 3, 10_000
    cell = cell_of(kind, k, p, seed=14, scan=scan, scale=6.0)
    rng = np.random.default_rng(15)
    x = rng.standard_normal((T, k)).astype(np.float32)
    w = rng.standard_normal((T, p))
    W_a, b_a = weights(cell)
    expected, _ = loop(kind, W_a, b_a, x.astype(np.float64), np.zeros(p))
    a, _ = jax.jit(lambda c, x: Recurrent(c)(x))(cell, x)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(a), expected, atol=2e-5 * scale)
    g = jax.jit(jax.grad(lambda c: jnp.sum(jnp.asarray(w, jnp.float32) * Recurrent(c)(x)[0])))(cell)
    dW, db, _, _ = loop_gradients(kind, W_a, b_a, x.astype(np.float64), np.zeros(p), w)
    np.testing.assert_allclose(np.asarray(g.W_a), dW, rtol=1e-3, atol=1e-4 * np.abs(dW).max())
    np.testing.assert_allclose(np.asarray(g.b_a), db, rtol=1e-3, atol=1e-4 * np.abs(db).max())


def test_minlstm_is_defined_where_f_plus_i_underflows():
    """Both gates' inputs at -120: f_t and i_t are 0 in float32 and f / (f + i) is 0/0; the cell gives the
    limit, σ(u_f - u_i) = 1/2 for equal inputs, and its gradients stay finite."""
    cell = cell_of("minlstm", 1, 1, seed=16)
    cell = eqx.tree_at(lambda c: (c.W_a, c.b_a), cell, (jnp.zeros((3, 1)), jnp.array([-120.0, -120.0, 3.0])))
    f = jax.nn.sigmoid(jnp.float32(-120.0))
    assert float(f) == 0.0 and np.isnan(float(f / (f + f)))  # the formula as written fails here
    alpha, beta = cell.coefficients(cell.project(jnp.ones(1)))
    np.testing.assert_allclose([float(alpha[0]), float(beta[0])], [0.5, 1.5], rtol=1e-6)
    a, _ = Recurrent(cell)(jnp.ones((5, 1)), a_0=jnp.array([1.0]))
    np.testing.assert_allclose(np.asarray(a[:, 0]), 3 - 2 * 0.5 ** np.arange(1, 6), rtol=1e-6)
    for u_f, u_i in ((-120.0, -121.5), (-50.0, -45.0), (-19.0, -22.0)):  # where f ≈ e^{u_f}: σ(u_f - u_i)
        z = jnp.array([u_f, u_i, 0.0])
        np.testing.assert_allclose(float(cell.coefficients(z)[0][0]), sigmoid(u_f - u_i), rtol=1e-6)
    g = jax.grad(lambda c: jnp.sum(Recurrent(c)(jnp.ones((5, 1)))[0]))(cell)
    d_f = jax.grad(lambda u: cell.coefficients(jnp.array([u, -121.5, 0.0]))[0][0])(-120.0)
    np.testing.assert_allclose(float(d_f), sigmoid(1.5) * sigmoid(-1.5), rtol=1e-5)  # ∂σ(u_f - u_i)/∂u_f
    assert np.isfinite(np.asarray(g.W_a)).all() and np.isfinite(np.asarray(g.b_a)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_bidirectional_stack_equals_the_loops_composed_by_hand(kind):
    rnn = rnnlab.RNN(kind, features=3, units=4, layers=2, bidirectional=True, key=jax.random.key(17))
    x = np.random.default_rng(18).standard_normal((2, 7, 3)).astype(np.float32)
    lengths = np.array([7, 4])
    a, finals = rnn(x, lengths)
    assert a.shape == (2, 7, 8) and len(finals) == 2
    for b, L in enumerate(lengths):
        h = x[b, :L].astype(np.float64)
        for layer in rnn.layers:
            fwd, _ = loop(kind, *weights(layer.forward.cell), h, np.zeros(4))
            bwd, _ = loop(kind, *weights(layer.backward.cell), h[::-1], np.zeros(4))
            h = np.concatenate([fwd, bwd[::-1]], axis=1)
        np.testing.assert_allclose(np.asarray(a[b, :L]), h, atol=1e-5)
        assert not np.asarray(a[b, L:]).any()
        np.testing.assert_allclose(np.asarray(finals[1][1][b]), bwd[-1], atol=1e-5)  # the backward's a_T: x_1


def test_the_two_scans_and_the_pieces_agree_forwards_and_backwards():
    cell = cell_of("minlstm", 3, 4, seed=19)
    x = jax.random.normal(jax.random.key(20), (2, 10, 3))
    lengths = jnp.array([10, 6])
    layers = [Recurrent(with_scan(cell, s), chunk=c) for s in SCANS for c in (None, 3)]

    @eqx.filter_jit
    def run(layer):
        return jax.value_and_grad(lambda lay: jnp.sum(jnp.sin(lay(x, lengths)[0])))(layer)

    (ref, g_ref), *others = [run(lay) for lay in layers]
    for value, g in others:
        np.testing.assert_allclose(float(value), float(ref), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(g.cell.W_a), np.asarray(g_ref.cell.W_a), rtol=1e-5, atol=1e-6)


def test_linear_scan_backward_is_the_derivative_of_the_plain_loop():
    rng = np.random.default_rng(21)
    alpha = jnp.asarray(rng.uniform(0, 1, (9, 2, 3)), jnp.float32)
    beta = jnp.asarray(rng.standard_normal((9, 2, 3)), jnp.float32)
    a_0 = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((9, 2, 3)), jnp.float32)

    def plain(alpha, beta, a_0):  # a Python loop: JAX differentiates it step by step
        a, out = a_0, []
        for t in range(alpha.shape[0]):
            a = alpha[t] * a + beta[t]
            out.append(a)
        return jnp.sum(w * jnp.stack(out))

    want = jax.grad(plain, argnums=(0, 1, 2))(alpha, beta, a_0)
    for method in SCANS:
        def scanned(alpha, beta, a_0, method=method):
            return jnp.sum(w * linear_scan(alpha, beta, a_0, method))

        got = jax.grad(scanned, argnums=(0, 1, 2))(alpha, beta, a_0)
        for g, h in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown scan method 'tree'"):
        linear_scan(alpha, beta, a_0, "tree")
    assert [depth(T) for T in (1, 2, 3, 1000, 1024, 1025, 10_000)] == [0, 1, 2, 10, 10, 11, 14]


@pytest.mark.parametrize("kind", KINDS)
def test_the_builder_and_make_cell_give_min_cells_without_U_a(kind):
    k, p = 5, 6
    G = 2 if kind == "mingru" else 3
    cell = rnnlab.make_cell(kind, k, p, key=jax.random.key(22))
    assert isinstance(cell, MinCell) and cell.kind == kind and cell.U_a is None
    assert cell.W_a.shape == (G * p, k) and cell.b_a.shape == (G * p,)
    W, U, _ = cell.gate(cell.gate_names[-1])
    assert U is None and np.array_equal(np.asarray(W), np.asarray(cell.W_a[-p:]))
    rnn = rnnlab.RNN(kind, features=k, units=p, layers=2, key=jax.random.key(23))
    assert rnnlab.explain(rnn).total == G * p * (k + 1) + G * p * (p + 1)  # no p×p term: no U_a
    with pytest.raises(ValueError, match="unknown scan 'fast'"):
        MinGRU(2, 2, scan="fast", key=jax.random.key(0))


def test_dropout_between_min_layers():
    rnn = rnnlab.RNN("mingru", features=3, units=8, layers=2, dropout=0.5, key=jax.random.key(24))
    x = jnp.ones((2, 5, 3))
    plain, _ = rnn(x)
    one, _ = rnn(x, key=jax.random.key(1))
    again, _ = rnn(x, key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(one), np.asarray(again))
    assert not np.allclose(np.asarray(one), np.asarray(plain))


def test_the_fused_engine_is_not_used_for_min_cells_and_pytorch_is_refused():
    cell = MinGRU(3, 4, key=jax.random.key(25))
    assert not fast.applies(cell, jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="PyTorch has no minGRU or minLSTM layer"):
        rnnlab.to_torch(rnnlab.RNN("minlstm", features=3, units=4, key=jax.random.key(26)))
