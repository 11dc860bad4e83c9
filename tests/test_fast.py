"""The fused CPU path equals the scan: outputs, final states and gradients wrt every weight and the input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import rnnlab
from rnnlab import fast
from rnnlab.layers import Recurrent

ATOL = 1e-4
CELLS = ["elman-tanh", "elman-relu", "elman-sigmoid", "gru", "gru-cho", "lstm"]


def test_the_engine_loads_on_ci():
    if not os.environ.get("CI"):
        pytest.skip("runs where CI is set: there the engine must be built")
    assert fast.available(), fast.LOAD_ERROR


needs_engine = pytest.mark.skipif(not fast.available(), reason=f"fused engine not built: {fast.LOAD_ERROR}")
pytestmark = needs_engine if not os.environ.get("CI") else []


def make(kind: str, k: int, p: int, key) -> rnnlab.Cell:
    if kind.startswith("elman"):
        return rnnlab.Elman(k, p, kind.split("-")[1], key=key)
    if kind.startswith("gru"):
        return rnnlab.GRU(k, p, reset_after=kind == "gru", key=key)
    return rnnlab.LSTM(k, p, key=key)


def scan_of(model, *args, **kw):
    """The model run on the scan, the fused path switched off while it is traced."""
    old = os.environ.get("RNNLAB_FAST")
    os.environ["RNNLAB_FAST"] = "0"
    try:
        return model(*args, **kw)
    finally:
        if old is None:
            del os.environ["RNNLAB_FAST"]
        else:
            os.environ["RNNLAB_FAST"] = old


def fused_of(model, *args, **kw):
    old = os.environ.pop("RNNLAB_FAST", None)
    try:
        return model(*args, **kw)
    finally:
        if old is not None:
            os.environ["RNNLAB_FAST"] = old


def jitted_forward(model, *args):
    """model(*args) under a jit of its own (traced afresh, so that the path it takes is the current one)."""
    return jax.jit(lambda model, *args: model(*args))(model, *args)


def grads_of(run):
    """(outputs, gradients wrt every array in the model and wrt x) of a loss that touches every output
    and every final state, weighted differently per element: one compiled function."""

    def loss(model_x, lengths, a_0):
        model, x = model_x
        out = run(model, x, lengths, a_0)
        leaves = jax.tree.leaves(out)
        return sum(jnp.sum(v * jnp.cos(jnp.arange(v.size).reshape(v.shape))) for v in leaves), out

    return eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))


def assert_trees_close(got, want, what: str):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=ATOL, err_msg=what)


def compare(model, x, lengths=None, a_0=None):
    """Outputs and gradients (wrt every array in the model and x) of the fused path and the scan."""
    (_, out_f), grad_f = grads_of(fused_of)((model, x), lengths, a_0)
    (_, out_s), grad_s = grads_of(scan_of)((model, x), lengths, a_0)
    assert_trees_close(out_f, out_s, "outputs")
    assert_trees_close(grad_f, grad_s, "gradients")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # each example compiles: no shrinking
@given(
    kind=st.sampled_from(CELLS),
    B=st.integers(1, 4),
    T=st.integers(1, 7),
    k=st.integers(1, 6),
    p=st.integers(1, 5),
    reverse=st.booleans(),
    with_lengths=st.booleans(),
    learn_a_0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_equals_scan_on_random_sizes(kind, B, T, k, p, reverse, with_lengths, learn_a_0, seed):
    key, kx, kl, ka = jax.random.split(jax.random.key(seed), 4)
    layer = Recurrent(make(kind, k, p, key), reverse=reverse, learn_a_0=learn_a_0)
    if learn_a_0:
        layer = eqx.tree_at(lambda m: m.a_0, layer, jax.random.normal(ka, (p,)))
    x = jax.random.normal(kx, (B, T, k))
    lengths = jax.random.randint(kl, (B,), 1, T + 1) if with_lengths else None
    assert fast.applies(layer.cell, x) == (os.environ.get("RNNLAB_FAST") != "0")
    compare(layer, x, lengths)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_equals_scan_at_sizes_past_one_vector(kind, reverse):
    """p = 37 and k = 19: the kernel's vectorised loops over the units end in a partial vector."""
    key, kx = jax.random.split(jax.random.key(7))
    layer = Recurrent(make(kind, 19, 37, key), reverse=reverse)
    x = jax.random.normal(kx, (5, 11, 19))
    compare(layer, x, jnp.array([11, 1, 6, 11, 3]))
    compare(layer, x)


@pytest.mark.parametrize("kind", CELLS)
def test_fused_equals_scan_when_the_batch_is_split_between_threads(kind):
    """B = 19: the kernel splits the batch into slabs of at least 8 sequences, one per thread (2 on CI),
    each run alone, and adds their weight gradients at the end."""
    key, kx, kl = jax.random.split(jax.random.key(11), 3)
    for reverse in (False, True):
        layer = Recurrent(make(kind, 6, 10, key), reverse=reverse)
        x = jax.random.normal(kx, (19, 7, 6))
        compare(layer, x, jax.random.randint(kl, (19,), 1, 8))


@pytest.mark.parametrize(("kind", "p"), [("elman-tanh", 720), ("gru", 416), ("lstm", 360)])
def test_fused_equals_scan_where_each_step_is_split_between_threads(kind, p):
    """Steps of B·G·p·(k+p) >= 8e6 multiply-adds and G·p² >= 5e5: one slab, each step's GEMM split by
    columns and its gate pass by sequences over the threads."""
    k = 100
    key, kx = jax.random.split(jax.random.key(5))
    layer = Recurrent(make(kind, k, p, key), reverse=kind == "gru")
    x = jax.random.normal(kx, (17, 3, k)) * 0.05
    compare(layer, x, jnp.array([3, 1, 2] * 5 + [3, 3]))


@pytest.mark.parametrize(("kind", "p"), [("elman-tanh", 256), ("gru", 256), ("lstm", 64)])
def test_fused_equals_scan_where_the_backward_pads_rows_off_powers_of_two(kind, p):
    """G·p or p a multiple of 256 floats: the backward keeps dgates and a copy of U_a with rows 16 floats
    longer (a power-of-two stride slows the GEMMs that read them)."""
    key, kx, kl = jax.random.split(jax.random.key(13), 3)
    layer = Recurrent(make(kind, 7, p, key))
    x = jax.random.normal(kx, (19, 5, 7))
    compare(layer, x, jax.random.randint(kl, (19,), 1, 6))


def test_the_lstm_microkernel_runs_where_the_cpu_has_avx512_or_avx2():
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = set(next((line for line in lines if line.startswith("flags")), "").split())
    want = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 0
    assert fast.engine.lstm_registers_width() == want


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("B", [68, 100])
def test_lstm_with_its_gates_in_registers_equals_the_scan(reverse, with_lengths, B):
    # Steps split between threads and p a multiple of 16 (368: 23 vectors of 16, 46 of 8): where AVX-512 or
    # AVX2 is there, the LSTM's gates stay in the GEMM's registers, forward with and without gradient.
    # Sequences go in row blocks (66 with AVX2, in tiles of 3; 96 with AVX-512, in tiles of 6): B = 68 ends
    # in a second block of 2 (AVX2) and a last tile of 2 (AVX-512), B = 100 in a second block of 34 (AVX2,
    # a last tile of 1) and of 4 (AVX-512). p = 368 leaves a last block of k of 112 (AVX2's blocks of 128).
    layer = Recurrent(rnnlab.LSTM(100, 368, key=jax.random.key(0)), reverse=reverse)
    x = jax.random.normal(jax.random.key(1), (B, 6, 100))
    lengths = jnp.arange(B) % 7 if with_lengths else None
    assert_trees_close(fused_of(jitted_forward, layer, x, lengths), scan_of(jitted_forward, layer, x, lengths),
                       "forward")
    compare(layer, x, lengths)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_with_its_gates_in_registers_in_pieces_equals_the_scan(reverse):
    # the in-register step (p = 368) in pieces of 5 steps of T = 12: views of the sequences, a last piece of 2
    layer = Recurrent(rnnlab.LSTM(100, 368, key=jax.random.key(0)), reverse=reverse, chunk=5)
    x = jax.random.normal(jax.random.key(1), (17, 12, 100))
    assert_trees_close(fused_of(jitted_forward, layer, x), scan_of(jitted_forward, layer, x), "forward")
    compare(layer, x, jnp.arange(17) % 13)


@pytest.mark.parametrize(("kind", "p"), [("elman-tanh", 9), ("gru", 9), ("lstm", 9), ("lstm", 368)])
def test_a_nan_in_x_gives_nans_where_the_scan_gives_them(kind, p):
    # (p = 368: the LSTM's in-register step, whose exp clamps its input; a NaN must not be clamped away)
    layer = Recurrent(make(kind, 100, p, jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (17, 6, 100)).at[3, 2, 7].set(jnp.nan)
    fused, scan = fused_of(jitted_forward, layer, x), scan_of(jitted_forward, layer, x)
    for f, s in zip(jax.tree.leaves(fused), jax.tree.leaves(scan), strict=True):
        assert np.isnan(np.asarray(s)).any()
        np.testing.assert_array_equal(np.isnan(np.asarray(f)), np.isnan(np.asarray(s)))


@pytest.mark.parametrize("kind", ["elman-tanh", "gru", "lstm"])
def test_fused_equals_scan_in_a_bidirectional_stack_with_lengths_and_a_0(kind):
    rnn = rnnlab.RNN(kind.split("-")[0], features=5, units=4, layers=2, bidirectional=True,
                     key=jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (3, 6, 5))
    lengths = jnp.array([6, 2, 4])
    a_0 = [(jax.random.normal(jax.random.key(3), (3, 4)), None), (None, jnp.ones((3, 4)))]
    compare(rnn, x, lengths, a_0)


@pytest.mark.parametrize("kind", ["elman-tanh", "gru", "lstm"])
def test_gradients_wrt_the_weights_alone_leave_dx_out_and_equal_the_scan(kind):
    # x is data here, not perturbed: the kernel's backward is told to skip dx (with_dx = 0)
    layer = Recurrent(make(kind, 6, 10, jax.random.key(3)))
    x = jax.random.normal(jax.random.key(4), (19, 7, 6))

    def loss(layer):
        a, final = layer(x)
        return jnp.sum(a * jnp.cos(jnp.arange(a.size).reshape(a.shape))) + jnp.sum(jax.tree.leaves(final)[0])

    def grad(layer):  # a jit of its own for each path (traced afresh)
        return eqx.filter_jit(eqx.filter_grad(loss))(layer)

    assert_trees_close(fused_of(grad, layer), scan_of(grad, layer), "gradients")
    hlo = fused_of(lambda: eqx.filter_jit(eqx.filter_grad(loss)).lower(layer).as_text())
    assert "rnnlab_kernel_backward" in hlo and "with_dx = 0" in hlo


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_fused_works_under_vmap(kind):
    layer = Recurrent(make(kind, 3, 4, jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (2, 3, 5, 3))  # vmapped over 2 batches of 3 sequences

    def run(of):
        return jax.jit(jax.vmap(lambda x: of(layer, x)))(x)

    assert_trees_close(run(fused_of), run(scan_of), "vmap")


@pytest.mark.parametrize("kind", ["elman-tanh", "gru", "gru-cho", "lstm"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("chunk", [4, 5])
def test_rematerialised_pieces_equal_the_scan(kind, reverse, with_lengths, chunk):
    # pieces in the kernel (gru-cho: oneDNN, piece by piece from Python); 5 does not divide T = 12
    layer = Recurrent(make(kind, 3, 5, jax.random.key(0)), reverse=reverse, chunk=chunk)
    x = jax.random.normal(jax.random.key(1), (3, 12, 3))
    a_0 = jax.random.normal(jax.random.key(2), (3, 5))
    compare(layer, x, jnp.array([12, 7, 2]) if with_lengths else None, a_0)


@pytest.mark.parametrize("kind", ["elman-tanh", "gru", "lstm"])
@pytest.mark.parametrize("reverse", [False, True])
def test_rematerialised_pieces_without_gradient_equal_the_scan(kind, reverse):
    layer = Recurrent(make(kind, 3, 5, jax.random.key(0)), reverse=reverse, chunk=3)
    x = jax.random.normal(jax.random.key(1), (2, 12, 3))
    assert_trees_close(fused_of(jitted_forward, layer, x), scan_of(jitted_forward, layer, x), "forward in pieces")


@pytest.mark.parametrize("kind", ["elman-tanh", "lstm"])
def test_rematerialised_pieces_equal_the_scan_when_the_batch_is_split_between_threads(kind):
    layer = Recurrent(make(kind, 6, 37, jax.random.key(0)), chunk=5)
    compare(layer, jax.random.normal(jax.random.key(1), (19, 20, 6)))


@pytest.mark.parametrize("kind", ["elman-tanh", "gru", "lstm"])
def test_backward_in_pieces_keeps_no_step_workspace_and_elman_gru_reuse_y_for_dy(kind):
    B, T, k, p = 4, 400, 8, 32
    layer = Recurrent(make(kind, k, p, jax.random.key(0)))
    x = jnp.ones((B, T, k))

    def temp_bytes(chunk):
        def loss(layer, x):
            a, _ = fast.sequence(layer.cell, x, None, layer.initial_state(batch=B), chunk=chunk)
            return jnp.mean(a * a)

        return jax.jit(jax.grad(loss)).lower(layer, x).compile().memory_analysis().temp_size_in_bytes

    y = B * T * p * 4
    whole, pieces = temp_bytes(None), temp_bytes(20)
    assert pieces < 0.6 * whole, (pieces, whole)
    if kind != "lstm":  # y is the only result of its forward call, so XLA writes dy over it
        assert pieces < 1.5 * y, (pieces, y)


def test_unsupported_settings_run_on_the_scan():
    x = jnp.ones((2, 3, 4))
    assert not fast.applies(rnnlab.Elman(4, 3, "softplus", key=jax.random.key(0)), x)
    assert not fast.applies(rnnlab.Elman(4, 3, key=jax.random.key(0)), x[0])  # one sequence: the scan
    os.environ["RNNLAB_FAST"] = "0"
    try:
        assert not fast.applies(rnnlab.GRU(4, 3, key=jax.random.key(0)), x)
    finally:
        del os.environ["RNNLAB_FAST"]


@pytest.mark.parametrize("kind", ["elman-tanh", "gru", "lstm"])
def test_streaming_step_equals_the_scan_and_compiles_once(kind):
    layer = Recurrent(make(kind, 3, 4, jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (2, 6, 3))
    step = fast.stepper(layer)
    state = layer.initial_state(batch=2)
    outs = []
    for t in range(6):
        state = step(state, x[:, t])  # the old state's buffers are donated: copy a_t out
        outs.append(np.asarray(layer.cell.hidden(state)))
    a, final = scan_of(layer, x)
    np.testing.assert_allclose(np.stack(outs, 1), a, atol=ATOL)
    assert_trees_close(state, final, "final state")
    assert step._cache_size() == 1


@pytest.mark.parametrize("kind", CELLS)
def test_stream_equals_the_scan_one_sequence_and_a_batch(kind):
    layer = Recurrent(make(kind, 3, 4, jax.random.key(0)), learn_a_0=True)
    layer = eqx.tree_at(lambda m: m.a_0, layer, jnp.linspace(-1, 1, 4))
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 6, 3)))
    a, final = scan_of(layer, x)
    batch = fast.Stream(layer, batch=2)
    outs = [batch(x[:, t]) for t in range(6)]
    np.testing.assert_allclose(np.stack(outs, 1), a, atol=ATOL)
    assert_trees_close(batch.state, final, "final state")
    outs[0][...] = 99.0  # what a call returns is the caller's own copy
    np.testing.assert_allclose(batch.state if kind != "lstm" else batch.state[0], a[:, -1], atol=ATOL)

    one = fast.Stream(layer)
    for _ in range(2):  # reset() starts the sequence again from a_0
        got = np.stack([one(x[1, t]) for t in range(6)])
        np.testing.assert_allclose(got, a[1], atol=ATOL)
        one.reset()
    with pytest.raises(ValueError, match=r"expected x_t of shape \(3,\) \(k=3 features\); got \(2, 3\)"):
        one(x[:, 0])


def test_a_larger_team_than_cores_gives_the_same_results_for_batches_of_changing_size():
    """RNNLAB_FAST_THREADS=4 (more threads than this machine may have): batches of 8, 40, 17 and 40 again
    split into 1, 4, 2 and 4 slabs, one call after another; each equals the scan."""
    script = """
import jax, jax.numpy as jnp, numpy as np, rnnlab
from rnnlab import fast
from rnnlab.layers import Recurrent
cell = rnnlab.LSTM(5, 6, key=jax.random.key(0))
def loss(cell, x, use_fast):
    s0 = Recurrent(cell).initial_state(batch=x.shape[0])
    a, _ = fast.sequence(cell, x, None, s0) if use_fast else Recurrent(cell)(x)
    return jnp.sum(a * jnp.cos(a))
grad = jax.jit(jax.grad(loss), static_argnums=2)
for _ in range(3):
    for B in (8, 40, 17, 40):
        x = jax.random.normal(jax.random.key(B), (B, 9, 5))
        for g, w in zip(jax.tree.leaves(grad(cell, x, True)), jax.tree.leaves(grad(cell, x, False))):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4)
print("ok")
"""
    env = dict(os.environ, RNNLAB_FAST_THREADS="4", RNNLAB_FAST="0")  # the scan for Recurrent, the engine by hand
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_the_kernels_pool_of_temporaries_is_kept_up_to_its_cap():
    # RNNLAB_SCRATCH_MB caps what the kernel keeps between calls: 0 keeps nothing
    code = (
        "import jax, jax.numpy as jnp, rnnlab; from rnnlab import fast; from rnnlab.layers import Recurrent;"
        "layer = Recurrent(rnnlab.LSTM(8, 32, key=jax.random.key(0)));"
        "jax.block_until_ready(jax.jit(lambda l, x: l(x))(layer, jnp.ones((4, 50, 8))));"
        "print(fast.engine.scratch_bytes())"
    )
    held = {}
    for cap in ("0", "1024"):
        env = dict(os.environ, RNNLAB_SCRATCH_MB=cap)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        held[cap] = int(out.stdout.split()[-1])
    assert held["0"] == 0
    assert held["1024"] >= 4 * 50 * (4 + 1 + 1) * 32 * 4  # at least the gates, c_t and a_t of the batch


def hlo_of(model, x) -> str:
    return jax.jit(lambda model, x: model(x)).lower(model, x).as_text()


@pytest.mark.parametrize("kind", ["elman-tanh", "gru", "gru-cho", "lstm"])
def test_engine_fused_and_engine_scan_agree_whatever_rnnlab_fast_says(kind):
    # the argument, not the environment, picks the path: RNNLAB_FAST=0 only sets what "auto" means
    cell = make(kind, 4, 5, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (3, 6, 4))
    lengths = jnp.array([6, 2, 4])
    fused, scan = Recurrent(cell, engine="fused", reverse=True), Recurrent(cell, engine="scan", reverse=True)
    old = os.environ.get("RNNLAB_FAST")
    os.environ["RNNLAB_FAST"] = "0"
    try:
        assert "rnnlab_forward" in hlo_of(fused, x) and "rnnlab_forward" not in hlo_of(scan, x)
        (_, out_f), grad_f = grads_of(lambda m, x, L, a_0: m(x, L, a_0))((fused, x), lengths, None)
        (_, out_s), grad_s = grads_of(lambda m, x, L, a_0: m(x, L, a_0))((scan, x), lengths, None)
    finally:
        if old is None:
            del os.environ["RNNLAB_FAST"]
        else:
            os.environ["RNNLAB_FAST"] = old
    assert_trees_close(out_f, out_s, "outputs")
    (layer_f, x_f), (layer_s, x_s) = grad_f, grad_s  # (the layers differ in engine: compare what they hold)
    assert_trees_close((layer_f.cell, x_f), (layer_s.cell, x_s), "gradients")
    assert "rnnlab_forward" not in hlo_of(Recurrent(cell, engine="scan"), x)  # auto's default aside


@pytest.mark.parametrize("kind", ["elman-relu", "lstm"])
def test_engine_fused_runs_one_sequence_as_a_batch_of_one(kind):
    cell = make(kind, 4, 5, jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (7, 4))
    a_0 = jnp.linspace(-1, 1, 5)
    fused = Recurrent(cell, engine="fused", reverse=True)
    assert "rnnlab_forward" in hlo_of(fused, x)
    for L in (None, jnp.array(4)):
        assert_trees_close(fused(x, L, a_0), Recurrent(cell, engine="scan", reverse=True)(x, L, a_0), "one sequence")


def test_engine_fused_says_why_it_cannot_run_and_auto_falls_back_to_the_scan():
    softplus = rnnlab.Elman(4, 3, "softplus", key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"engine=\"fused\": the fused engine runs Elman with tanh, relu or "
                                         r"sigmoid; got 'softplus' \(engine=\"auto\" falls back to the scan\)"):
        Recurrent(softplus, engine="fused")
    auto = Recurrent(softplus)
    x = jnp.ones((2, 3, 4))
    assert "rnnlab_forward" not in hlo_of(auto, x)
    np.testing.assert_allclose(auto(x)[0], Recurrent(softplus, engine="scan")(x)[0])
    fused = Recurrent(rnnlab.GRU(4, 3, key=jax.random.key(0)), engine="fused")
    with pytest.raises(ValueError, match=r"engine=\"fused\": the fused engine runs float32 inputs; got x of float16"):
        fused(jnp.ones((2, 3, 4), jnp.float16))
    with pytest.raises(ValueError, match=r"engine must be one of auto, scan, fused; got 'gpu'"):
        Recurrent(softplus, engine="gpu")
    with pytest.raises(ValueError, match=r"engine must be one of auto, scan, fused; got 'Fused'"):
        rnnlab.RNN("gru", 4, 3, engine="Fused", key=jax.random.key(0))


def test_rnn_and_with_engine_set_every_layer_and_keep_the_weights():
    from rnnlab.layers import with_engine

    rnn = rnnlab.RNN("lstm", features=4, units=3, layers=2, bidirectional=True, engine="scan", key=jax.random.key(0))
    engines = lambda m: [leaf.engine for leaf in jax.tree.leaves(m, is_leaf=lambda n: isinstance(n, Recurrent))  # noqa: E731
                         if isinstance(leaf, Recurrent)]
    assert engines(rnn) == ["scan"] * 4
    fused = with_engine(rnn, "fused")
    assert engines(fused) == ["fused"] * 4 and engines(rnn) == ["scan"] * 4
    assert all(a is b for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(rnn), strict=True))
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))
    assert_trees_close(fused(x, jnp.array([5, 3])), rnn(x, jnp.array([5, 3])), "stack")
    with pytest.raises(ValueError, match="engine must be one of"):
        with_engine(rnn, "cuda")


def test_the_kernel_or_onednn_is_chosen_in_config_alone():
    # the GRU without reset_after runs on oneDNN; RNNLAB_FAST_ENGINE=onednn puts every cell there
    gru, cho, lstm = (make(kind, 3, 4, jax.random.key(0)) for kind in ("gru", "gru-cho", "lstm"))
    assert fast.config(gru).kernel and fast.config(lstm).kernel and not fast.config(cho).kernel
    x = jax.random.normal(jax.random.key(1), (3, 5, 3))
    os.environ["RNNLAB_FAST_ENGINE"] = "onednn"
    try:
        assert not fast.config(gru).kernel and not fast.config(lstm).kernel
        layer = Recurrent(lstm, engine="fused")
        hlo = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(m(x)[0] ** 2))).lower(layer).as_text()
        assert "rnnlab_backward" in hlo and "rnnlab_kernel_backward" not in hlo and "kernel = 0" in hlo
        compare(layer, x, jnp.array([5, 1, 3]))
    finally:
        del os.environ["RNNLAB_FAST_ENGINE"]


def test_training_takes_the_engine_as_a_setting():
    from typer.testing import CliRunner

    from rnnlab.cli import app
    from rnnlab.train import Config

    with pytest.raises(ValueError, match=r"--engine gpu: the engine is one of auto \| scan \| fused"):
        Config(engine="gpu").validate()
    assert Config().engine == "auto" and Config(engine="fused").validate().engine == "fused"
    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "--engine" in res.output and "default: auto" in res.output


# -- the subword mean of x_t (bag.cc) ----------------------------------------------------------------------

def _bag_case(seed: int = 0, N: int = 41, k: int = 5, G: int = 6):
    """H (N, k) and n-gram ids g (3, 4, G) with every kind of slot: empty (0), negative, rows past H, a
    position with no n-gram at all, and a row repeated within one position."""
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(N, k)).astype(np.float32)
    g = rng.integers(-2, N + 3, size=(3, 4, G)).astype(np.int32)
    g[0, 0] = 0
    g[1, 1, 2:] = 0
    g[2, 3, :3] = 7
    return H, g


def _bag_by_hand(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    out = np.zeros((*g.shape[:-1], H.shape[1]), np.float64)
    for i in np.ndindex(*g.shape[:-1]):
        ids = [r for r in g[i].tolist() if r > 0]
        out[i] = sum((H[r].astype(np.float64) for r in ids if r < len(H)), np.zeros(H.shape[1])) / max(len(ids), 1)
    return out


def test_the_engines_subword_mean_equals_the_equation_by_hand():
    H, g = _bag_case()
    assert np.allclose(np.asarray(fast.bag(jnp.asarray(H), jnp.asarray(g))), _bag_by_hand(H, g), atol=1e-6)


def test_the_engines_subword_gradient_equals_jaxs_gather_and_finite_differences():
    H, g = _bag_case(1)
    w = jnp.asarray(np.random.default_rng(2).normal(size=(*g.shape[:-1], H.shape[1])).astype(np.float32))

    def gather(H):  # models.TextClassifier.embed's JAX path
        rows = H.at[jnp.where(g > 0, g, H.shape[0])].get(mode="fill", fill_value=0.0)
        return rows.sum(-2) / jnp.maximum((g > 0).sum(-1, keepdims=True), 1)

    on_engine = jax.grad(lambda H: (fast.bag(H, jnp.asarray(g)) * w).sum())(jnp.asarray(H))
    by_jax = jax.grad(lambda H: (gather(H) * w).sum())(jnp.asarray(H))
    assert np.allclose(np.asarray(on_engine), np.asarray(by_jax), atol=1e-6)
    assert not np.asarray(on_engine)[0].any()  # row 0 means "no n-gram": it never learns
    H64, w64 = H.astype(np.float64), np.asarray(w, np.float64)
    for r, j in [(7, 0), (3, 2), (12, 4)]:
        e = np.zeros_like(H64)
        e[r, j] = 1e-3
        numeric = ((_bag_by_hand(H64 + e, g) - _bag_by_hand(H64 - e, g)) * w64).sum() / 2e-3
        assert np.isclose(float(on_engine[r, j]), numeric, atol=1e-4)


def test_a_model_on_the_engine_embeds_and_learns_as_on_the_scan():
    from rnnlab.data import subwords
    from rnnlab.layers import with_engine
    from rnnlab.models import ModelConfig, TextClassifier

    vocab = ["<pad>", "<unk>", "happy", "sad", "day", "today", "!"]
    config = ModelConfig(vocab_size=len(vocab), classes=2, k=4, units=3, subword_buckets=64,
                         subword_grams=subwords.MAX_GRAMS)
    model = TextClassifier(config, key=jax.random.key(0), grams=subwords.table(vocab, 64))
    model = eqx.tree_at(lambda m: m.H, model, jax.random.normal(jax.random.key(1), model.H.shape))
    tokens, lengths = jnp.array([[2, 4, 5, 6, 0], [3, 6, 0, 0, 0]]), jnp.array([4, 2])
    fused, scan = with_engine(model, "fused"), with_engine(model, "scan")
    cell = model.rnn.layers[0].forward.cell
    assert fast.bag_on_engine(fused.engine, cell, fused.H) and not fast.bag_on_engine(scan.engine, cell, scan.H)
    assert np.allclose(np.asarray(fused.embed(tokens)), np.asarray(scan.embed(tokens)), atol=1e-6)

    def dH(m):
        return eqx.filter_grad(lambda m: m(tokens, lengths).sum())(m).H

    assert np.allclose(np.asarray(dH(fused)), np.asarray(dH(scan)), atol=1e-5)


def test_the_engines_subword_mean_of_no_slots_is_zero_as_jaxs():
    H = jnp.asarray(np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32))
    assert np.array_equal(np.asarray(fast.bag(H, jnp.zeros((4, 0), jnp.int32))), np.zeros((4, 3)))
    assert np.array_equal(np.asarray(jax.grad(lambda H: fast.bag(H, jnp.zeros((2, 0), jnp.int32)).sum())(H)),
                          np.zeros((9, 3)))
    with pytest.raises((ValueError, TypeError)):  # TypeError: where jaxtyping checks the shapes first
        fast.bag(H, jnp.int32(2))


def test_a_model_whose_layers_stay_in_jax_keeps_jaxs_subword_mean():
    from rnnlab.data import subwords
    from rnnlab.models import ModelConfig, TextClassifier

    vocab = ["<pad>", "<unk>", "happy", "sad"]
    config = ModelConfig(vocab_size=4, classes=2, k=4, units=3, cell="mingru", subword_buckets=16,
                         subword_grams=subwords.MAX_GRAMS)
    model = TextClassifier(config, key=jax.random.key(0), grams=subwords.table(vocab, 16))
    cell = model.rnn.layers[0].forward.cell
    assert model.engine == "auto" and not fast.bag_on_engine("auto", cell, model.H)
    assert fast.bag_on_engine("auto", rnnlab.GRU(4, 3, key=jax.random.key(1)), model.H)  # a cell the engine runs


@pytest.mark.parametrize("kind", ["elman-tanh", "gru"])
def test_the_kernel_reads_a_sequence_reversed_within_its_length_as_reversing_around_it(kind):
    """`Config.within`: the kernel reads step t of sequence n at L_n - 1 - t itself. Its values and
    gradients (x, a_0, every weight) are those of reversing x and a around a forward run in JAX, to the bit,
    lengths 0 and T included; where it cannot run (oneDNN, in pieces) the engine refuses it."""
    from rnnlab.fast import engine, layer
    from rnnlab.padding import reverse_within, valid_steps

    B, T, k, p = 33, 7, 5, 6  # slabs of the batch on more than one thread, their lengths offset
    cell = make(kind, k, p, jax.random.key(0))
    assert layer.config(cell).kernel or os.environ.get("RNNLAB_FAST_ENGINE") == "onednn"
    if not layer.config(cell).kernel:
        pytest.skip("the kernel is switched off (RNNLAB_FAST_ENGINE=onednn)")
    x, a0, w = (jax.random.normal(jax.random.key(i), s) for i, s in ((1, (B, T, k)), (2, (B, p)), (3, (B, T, p))))
    L = jnp.asarray(np.random.default_rng(0).integers(0, T + 1, B).clip(0, T), jnp.int32).at[:2].set(
        jnp.array([0, T], jnp.int32))

    def around(cell, x, a0):
        cfg = layer.config(cell)
        a, _, _ = engine.fused(cfg, jax.vmap(reverse_within)(x, L), a0, jnp.zeros((1,)), cell.W_a, cell.U_a,
                               cell.b_a, layer._c_n(cell), L)
        a = jnp.where(valid_steps(L, T)[..., None], a, 0.0)
        aT = jnp.where((L > 0)[:, None], jnp.take_along_axis(a, jnp.clip(L - 1, 0)[:, None, None], axis=1)[:, 0], a0)
        return jax.vmap(reverse_within)(a, L), aT

    def inside(cell, x, a0):
        return layer.sequence(cell, x, L, a0, reverse=True)

    results = []
    for run in (around, inside):
        def loss(cell, x, a0, run=run):
            a, aT = run(cell, x, a0)
            return (a * w).sum() + (aT * aT).sum(), (a, aT)
        results.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(cell, x, a0))
    for ours, theirs in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0]), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    cfg = layer.config(cell)._replace(within=True)
    with pytest.raises(Exception, match="within lengths runs on the kernel"):
        engine.fused(cfg, x, a0, jnp.zeros((1,)), cell.W_a, cell.U_a, cell.b_a, layer._c_n(cell), L, chunk=3)
    with pytest.raises(Exception, match="within lengths runs on the kernel"):
        engine.fused(cfg._replace(kernel=False), x, a0, jnp.zeros((1,)), cell.W_a, cell.U_a, cell.b_a,
                     layer._c_n(cell), L)
