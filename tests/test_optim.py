"""rnnlab.optim against optax.adamw and a plain dense moving average: equal where E's rows are all read,
lazy (untouched rows left alone) where they are not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlab import optim

V, k = 7, 3
HYPER = optim.Hyper(weight_decay=0.1)  # a large decay, so that any mistake in it shows
RATES = np.array([0.0, 0.05, 0.1, 0.08, 0.03, 0.01], np.float32)


def _optax():
    return optax.adamw(lambda count: jnp.asarray(RATES)[count], b1=HYPER.b1, b2=HYPER.b2, eps=HYPER.eps,
                       weight_decay=HYPER.weight_decay)


def _rows_step(E, m, v, tokens, g_x, count, scale=1.0):
    """One step of E through its lookups: the rows' summed gradients, then the row update."""
    rows, inverse = optim.unique_rows(jnp.asarray(tokens), V)
    g_rows = optim.row_gradients(jnp.asarray(g_x), inverse)
    return optim.adamw_rows(E, m, v, rows, g_rows, RATES[count], jnp.int32(count), HYPER, scale)


def _dense_grad(tokens, g_x):
    return jnp.zeros((V, k)).at[jnp.asarray(tokens).reshape(-1)].add(g_x)


def test_dense_leaves_equal_optax_adamw():
    rng = np.random.default_rng(0)
    params = {"W_a": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b_a": jnp.asarray(rng.normal(size=4))}
    opt, ours = _optax(), optim.adamw_init(params)
    ref, ref_state = params, opt.init(params)
    p = params
    for count in range(len(RATES)):
        g = {name: jnp.asarray(rng.normal(size=x.shape), jnp.float32) for name, x in params.items()}
        updates, ref_state = opt.update(g, ref_state, ref)
        ref = optax.apply_updates(ref, updates)
        new = {n: optim.adamw_dense(p[n], g[n], ours.m[n], ours.v[n], RATES[count], ours.count, HYPER) for n in p}
        p = {n: new[n][0] for n in p}
        ours = optim.AdamWState(ours.count + 1, {n: new[n][1] for n in p}, {n: new[n][2] for n in p})
        for n in p:
            np.testing.assert_allclose(p[n], ref[n], rtol=1e-6, atol=1e-7)
    assert int(ours.count) == len(RATES)


def test_rows_equal_dense_adamw_where_every_row_is_read():
    """Each batch reads all V rows, some several times (their gradients add up): the row update is the
    dense one, weight decay and moments included."""
    rng = np.random.default_rng(1)
    E0 = jnp.asarray(rng.normal(size=(V, k)), jnp.float32)
    opt = _optax()
    ref, ref_state = E0, opt.init(E0)
    E, m, v = E0, jnp.zeros((V, k)), jnp.zeros((V, k))
    for count in range(len(RATES)):
        tokens = np.concatenate([rng.permutation(V), rng.integers(0, V, 5)]).reshape(3, 4)
        g_x = rng.normal(size=(tokens.size, k)).astype(np.float32)
        updates, ref_state = opt.update(_dense_grad(tokens, g_x), ref_state, ref)
        ref = optax.apply_updates(ref, updates)
        E, m, v = _rows_step(E, m, v, tokens, g_x, count)
        np.testing.assert_allclose(E, ref, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(m, ref_state[0].mu, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(v, ref_state[0].nu, rtol=1e-6, atol=1e-9)


def test_rows_not_read_are_left_alone_where_dense_adamw_moves_them():
    """Lazy: a row no batch reads keeps its weight and moments; dense AdamW decays the weight (and, once
    it has moments, keeps moving it). A row that every batch reads follows the dense rule exactly."""
    rng = np.random.default_rng(2)
    E0 = jnp.asarray(rng.normal(size=(V, k)), jnp.float32)
    opt = _optax()
    ref, ref_state = E0, opt.init(E0)
    E, m, v = E0, jnp.zeros((V, k)), jnp.zeros((V, k))
    read = np.array([0, 2, 3])  # rows 1, 4, 5, 6 never read
    for count in range(len(RATES)):
        tokens = np.concatenate([read, rng.choice(read, 3)])
        g_x = rng.normal(size=(tokens.size, k)).astype(np.float32)
        updates, ref_state = opt.update(_dense_grad(tokens, g_x), ref_state, ref)
        ref = optax.apply_updates(ref, updates)
        E, m, v = _rows_step(E, m, v, tokens, g_x, count)
    unread = np.setdiff1d(np.arange(V), read)
    np.testing.assert_array_equal(E[unread], E0[unread])
    assert float(jnp.abs(m[unread]).max()) == 0.0 and float(jnp.abs(v[unread]).max()) == 0.0
    assert float(jnp.abs(ref[unread] - E0[unread]).min()) > 0  # dense: weight decay moved them
    np.testing.assert_allclose(E[read], ref[read], rtol=1e-6, atol=1e-7)


def test_row_scale_is_a_relative_rate():
    rng = np.random.default_rng(3)
    E0 = jnp.asarray(rng.normal(size=(V, k)), jnp.float32)
    tokens = np.arange(V)
    g_x = rng.normal(size=(V, k)).astype(np.float32)
    zeros = jnp.zeros((V, k))
    full, _, _ = _rows_step(E0, zeros, zeros, tokens, g_x, 2)
    half, _, _ = _rows_step(E0, zeros, zeros, tokens, g_x, 2, scale=0.5)
    np.testing.assert_allclose(half - E0, 0.5 * (full - E0), rtol=1e-5, atol=1e-7)


def test_unique_rows_and_their_summed_gradients():
    tokens = jnp.array([[3, 1, 3], [0, 3, 1]])
    rows, inverse = optim.unique_rows(tokens, V)
    assert rows.tolist() == [0, 1, 3, V, V, V]  # distinct ids, then filler V (no row)
    g = optim.row_gradients(jnp.arange(6.0)[:, None] * jnp.ones((1, 2)), inverse)
    # id 0 at position 3; id 1 at 1 and 5; id 3 at 0, 2, 4
    np.testing.assert_array_equal(g[:, 0], [3.0, 6.0, 6.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_lazy_moving_average_equals_the_dense_one(seed):
    """A table whose rows change only now and then (as under lazy AdamW): the lazy average, read at any
    step, is the dense d·ema + (1 - d)·E of every row at every step."""
    rng = np.random.default_rng(seed)
    E = jnp.asarray(rng.normal(size=(V, k)), jnp.float32)
    dense, lazy = E, E
    state = optim.ema_init((E,))
    row_log = state.row_log_decay[0]
    log_decay = state.log_decay
    for step in range(25):
        rows_read = np.unique(rng.integers(0, V, 3))
        rows = jnp.asarray(np.concatenate([rows_read, np.full(3 - len(rows_read) + 2, V)]))  # with filler
        E_after = E.at[jnp.asarray(rows_read)].add(jnp.asarray(rng.normal(size=(len(rows_read), k)), jnp.float32))
        d = optim.ema_decay(0.9, jnp.int32(step))
        dense = optim.ema_dense(dense, E_after, d)
        lazy, row_log = optim.ema_rows(lazy, row_log, log_decay, E, E_after, rows, d)
        log_decay = log_decay + jnp.log(d)
        E = E_after
        np.testing.assert_allclose(optim.ema_rows_read(lazy, row_log, log_decay, E), dense, rtol=1e-5, atol=1e-6)


def test_ema_decay_warms_up():
    d = [float(optim.ema_decay(0.99, jnp.int32(s))) for s in (0, 1, 90, 10_000)]
    assert d == pytest.approx([1 / 10, 2 / 11, 0.91, 0.99])


def test_clip_scale_and_global_norm():
    g = ({"a": jnp.array([3.0, 0.0])}, {"b": jnp.array([[4.0]]), "c": None})
    assert float(optim.global_norm(g)) == pytest.approx(5.0)
    assert float(optim.clip_scale(optim.global_norm(g), 1.0)) == pytest.approx(0.2)
    assert float(optim.clip_scale(optim.global_norm(g), 10.0)) == 1.0
    assert jax.tree.leaves(g)  # None leaves are skipped, not counted
