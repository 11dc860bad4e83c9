"""What the fast training step must keep: the same update as dense AdamW where a batch reads every row of
E, one compilation per shape and configuration for the life of the process, no growth of memory
mappings across `fit` calls, batches prepared ahead in order. No timing here (benchmarks/train_speed.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlab.data import Dataset, Split
from rnnlab.data.batches import prefetch
from rnnlab.models import ModelConfig, TextClassifier
from rnnlab.train import Config, StepConfig, _train_step, averaged, fit, init_state, schedule, trainable


@eqx.filter_jit
def _reference_step(params, ema, static, opt_state, optimizer, clip, embed_lr, decay, step, tokens, lengths, labels,
                    weights, key):
    """The dense step rnnlab had before: AdamW over the whole of E, then the moving average."""
    def loss_fn(params):
        total = 0.0
        for i, model in enumerate(eqx.combine(params, static)):
            logits = model(tokens, lengths, key=jax.random.fold_in(key, i))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            total = total + (ce * weights).sum() / jnp.maximum(weights.sum(), 1e-9)
        return total / len(params)

    loss, grads = eqx.filter_value_and_grad(loss_fn)(params)
    grads = tuple(jax.tree.map(lambda g, n=optax.tree.norm(gs): g * jnp.minimum(1.0, clip / n), gs)
                  for gs in grads)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    updates = tuple(eqx.tree_at(lambda m: m.E, u, u.E * embed_lr) for u in updates)
    params = eqx.apply_updates(params, updates)
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
    return params, ema, opt_state, loss


def test_step_equals_dense_adamw_where_every_row_of_E_is_read():
    """Two members, a relative rate for E, the moving average on: every batch reads all V rows, so the
    row-sparse step and the dense reference agree on the weights, the average and the loss."""
    V = 9
    config = Config(lr=0.05, weight_decay=0.1, embed_lr=0.5, ema=0.9, clip=0.5, warmup=0.2)
    mc = ModelConfig(vocab_size=V, classes=3, k=4, units=3, dropout=0.3)
    members = tuple(TextClassifier(mc, key=jax.random.key(i)) for i in range(2))
    params, static = eqx.partition(members, tuple(trainable(m) for m in members))
    steps = 4
    rates = schedule(config, steps)
    optimizer = optax.adamw(lambda c: jnp.asarray(rates)[c], weight_decay=config.weight_decay)
    ref = (params, params, optimizer.init(params))
    state = init_state(params)
    key = jax.random.key(5)
    fixed = (static, StepConfig.of(config), jnp.asarray(rates), key)
    rng = np.random.default_rng(0)
    for step in range(steps):
        tokens = np.concatenate([rng.permutation(V), rng.integers(0, V, 3)]).reshape(3, 4).astype(np.int32)
        lengths = np.array([4, 3, 4], np.int32)
        labels, weights = rng.integers(0, 3, 3).astype(np.int32), np.array([1.0, 0.5, 2.0], np.float32)
        tokens, lengths, labels, weights = jax.device_put((tokens, lengths, labels, weights))
        *ref, ref_loss = _reference_step(*ref[:2], static, ref[2], optimizer, config.clip, config.embed_lr,
                                         config.ema, jnp.float32(step),
                                         tokens, lengths, labels, weights, jax.random.fold_in(key, step + 1))
        state, loss = _train_step(fixed, state, tokens, lengths, labels, weights)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        for ours, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref[0]), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    for ours, theirs in zip(jax.tree.leaves(averaged(state)), jax.tree.leaves(ref[1]), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def _toy(n: int = 48) -> Dataset:
    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "ok", "meh", "great", "sad"]
    texts = [" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(n)]
    labels = np.array([int("good" in t or "great" in t) for t in texts])
    split = lambda a, b: Split(texts[a:b], labels[a:b], "toy")  # noqa: E731
    return Dataset("toy", ("neg", "pos"), {"train": split(0, 32), "val": split(32, 40), "test": split(40, n)},
                   "toy")


def _maps() -> int:
    return len(Path("/proc/self/maps").read_text().splitlines())


def test_fit_compiles_once_and_does_not_leak():
    """After the first fit, more fits of the same shapes and configuration compile nothing (the step, the
    evaluation, the averaging) and leave the process's memory mappings where they were."""
    compiles = []
    listener = lambda event, seconds, **kw: compiles.append(event) if event.endswith("backend_compile_duration") \
        else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    config = Config(embeddings=None, k=8, units=4, epochs=1, batch_size=8, maxlen=16)
    try:
        data = _toy()
        for _ in range(2):
            fit(config, data, progress=False)
        first, maps = len(compiles), _maps()
        for _ in range(6):
            fit(config, data, progress=False)
        assert len(compiles) == first, f"{len(compiles) - first} compilations in 6 more fits"
        assert _maps() - maps < 30, f"memory mappings grew by {_maps() - maps} in 6 fits"
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_frozen_embeddings_stay_and_the_rest_trains():
    data = _toy()
    config = Config(embeddings=None, k=8, units=4, epochs=1, batch_size=8, maxlen=16, freeze_embeddings=True)
    result = fit(config, data, progress=False)
    first = TextClassifier(result.model.config, key=jax.random.fold_in(jax.random.key(config.seed), 0))
    np.testing.assert_array_equal(result.model.E, first.E)
    assert not np.allclose(result.model.head.W_y, first.head.W_y)


def test_prefetch_keeps_order_raises_where_it_failed_and_stops_when_left():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise KeyError("batch 2")

    got = []
    with pytest.raises(KeyError, match="batch 2"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1]
    before = threading.active_count()
    for x in prefetch(iter(range(1000)), depth=2):
        if x == 3:
            break
    assert threading.active_count() == before


_PROGRAM = """
import jax, jax.numpy as jnp
from rnnlab import compile_cache
hits = []
jax.monitoring.register_event_listener(lambda e, **kw: hits.append(e) if e.endswith("cache_hits") else None)
print(compile_cache.enable())
print(float(jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((3, 3))).sum()), len(hits))
"""


def _run(env: dict) -> list[str]:
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PROGRAM], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True, timeout=300)
    return out.stdout.split()


def test_compilation_cache_serves_a_second_process(tmp_path):
    """The first process compiles and writes the cache; the second loads it (a cache hit); the setting 0
    turns it off."""
    env = {"RNNLAB_COMPILE_CACHE": str(tmp_path / "cache")}
    first = _run(env)
    assert first[0] == str(tmp_path / "cache") and first[2] == "0"
    assert any((tmp_path / "cache").iterdir())
    second = _run(env)
    assert second[1] == first[1] and int(second[2]) >= 1
    assert _run({"RNNLAB_COMPILE_CACHE": "0"})[0] == "None"


def test_pretraining_compiles_once_for_the_same_shapes():
    from rnnlab.pretrain import pretrain

    compiles = []
    listener = lambda event, seconds, **kw: compiles.append(event) if event.endswith("backend_compile_duration") \
        else None  # noqa: E731
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, (16, 8)).astype(np.int32)
    lengths = rng.integers(2, 9, 16).astype(np.int32)
    model = TextClassifier(ModelConfig(vocab_size=20, classes=2, k=6, units=4), key=jax.random.key(0))
    pretrain(model, ids, lengths, epochs=1, words=10, batch_size=8)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for seed in (1, 2):
            pretrain(model, ids, lengths, epochs=1, words=10, batch_size=8, seed=seed)
        assert compiles == []
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_one_program_serves_equal_static_parts_and_reads_their_arrays():
    """The step is found again for members built anew with the same structure (no second trace), and the
    arrays among the static parts (the n-grams' table) are inputs of the program, not constants in it."""
    from rnnlab.train import _step_for

    mc = ModelConfig(vocab_size=6, classes=2, k=4, units=3, subword_buckets=5, subword_grams=2)
    grams = np.array([[0, 0], [1, 2], [3, 0], [4, 5], [2, 2], [5, 1]], np.int32)
    cfg = StepConfig.of(Config())
    tokens, lengths = jnp.array([[1, 2, 3], [4, 5, 0]], jnp.int32), jnp.array([3, 2], jnp.int32)
    labels, weights = jnp.array([0, 1], jnp.int32), jnp.ones(2, jnp.float32)
    losses, fns = [], []
    for table in (grams, grams[::-1].copy()):
        model = TextClassifier(mc, key=jax.random.key(0), grams=table)
        model = eqx.tree_at(lambda m: m.H, model, jnp.ones_like(model.H))  # rows that change x_t
        params, static = eqx.partition((model,), (trainable(model),))
        fns.append(_step_for(static, cfg).fn)
        fixed = (static, cfg, jnp.asarray(schedule(Config(), 4)), jax.random.key(1))
        losses.append(float(_train_step(fixed, init_state(params), tokens, lengths, labels, weights)[1]))
    assert fns[0] is fns[1]
    assert losses[0] != losses[1]
    assert _step_for(static, StepConfig.of(Config(clip=0.5))).fn is not fns[0]
