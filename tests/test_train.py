"""Metrics against hand computation, the model's masking and trace, training, checkpoints and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import metrics
from rnnlab.checkpoint import STATE, load_arrays, load_run, predict_proba, save_run
from rnnlab.data import Dataset, Split, Vocabulary
from rnnlab.data.batches import encode, make
from rnnlab.models import ModelConfig, TextClassifier, pool
from rnnlab.train import Config, class_weight, fit

REPO = Path(__file__).resolve().parents[1]

# -- metrics -----------------------------------------------------------------------------------------------


def test_metrics_by_hand():
    # 3 classes. true: 0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    y_true, y_pred = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    M = metrics.confusion(y_true, y_pred, 3)
    assert M.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # class 0: P 2/2 R 2/3 F1 0.8; class 1: P 1/2 R 1/2 F1 0.5; class 2: P 1/2 R 1/1 F1 2/3
    s = metrics.per_class(M)
    np.testing.assert_allclose(s["f1"], [0.8, 0.5, 2 / 3])
    labels = ("against", "none", "favor")
    assert metrics.score("macro_f1", M, labels) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics.score("macro_recall", M, labels) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics.score("accuracy", M, labels) == pytest.approx(4 / 6)
    assert metrics.score("f1_against_favor", M, labels) == pytest.approx((0.8 + 2 / 3) / 2)


def test_official_metric_per_task_and_irony_class():
    assert [metrics.official_metric(t) for t in ("emotion", "hate", "offensive", "emoji", "irony", "stance",
                                                 "stance/abortion", "sentiment", "anything")] == [
        "macro_f1", "macro_f1", "macro_f1", "macro_f1", "f1_irony", "f1_against_favor", "f1_against_favor",
        "macro_recall", "macro_f1"]
    # irony: true 1 1 0 0, pred 1 0 0 1 -> ironic class: P 1/2, R 1/2, F1 1/2 (not the 0.5 macro by chance:
    # use a case where they differ) ; true 1 1 1 0, pred 1 1 0 0 -> ironic P 1, R 2/3, F1 0.8
    r = metrics.report(np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0]), ("non_irony", "irony"), "irony")
    assert r["metric"] == "f1_irony" and r["score"] == pytest.approx(0.8)
    assert r["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)  # non_irony: P 1/2 R 1 F1 2/3
    assert r["per_class"]["irony"]["support"] == 3 and r["confusion"] == [[1, 0], [1, 2]]


def test_class_weights_balanced():
    w = class_weight(np.array([0, 0, 0, 1]), 2, "balanced")
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1)])
    np.testing.assert_array_equal(class_weight(np.array([0, 1]), 2, "none"), [1, 1])


# -- model -------------------------------------------------------------------------------------------------

def test_pooling_reads_only_valid_steps():
    a = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2) * jnp.array([1, -1])
    lengths = jnp.array([2, 4])
    # sequence 0 has steps [0, -1], [2, -3] (then padding [4, -5], [6, -7]); sequence 1 [8, -9] .. [14, -15]
    np.testing.assert_allclose(pool(a, lengths, "max"), [[2, -1], [14, -9]])
    np.testing.assert_allclose(pool(a, lengths, "mean"), [[1, -2], [11, -12]])
    np.testing.assert_allclose(pool(a, lengths, "last"), [[2, -3], [14, -15]])
    # two directions: forward half from step L, backward half from step 1
    np.testing.assert_allclose(pool(a, lengths, "last", bidirectional=True), [[2, -1], [14, -9]])


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padding_changes_nothing_and_trace_ends_in_the_prediction(pooling):
    m = TextClassifier(ModelConfig(vocab_size=30, classes=3, k=6, units=5, pooling=pooling), key=jax.random.key(1))
    text = jnp.array([4, 9, 2, 7])
    alone = m.predict_proba(text[None], jnp.array([4]))
    padded = m.predict_proba(jnp.array([[4, 9, 2, 7, 0, 0, 0], [3, 3, 3, 3, 3, 3, 3]]), jnp.array([4, 7]))
    np.testing.assert_allclose(padded[0], alone[0], rtol=1e-5, atol=1e-6)
    a, y = m.trace(jnp.array([4, 9, 2, 7, 0, 0]), 4)
    assert a.shape == (6, 10) and y.shape == (6, 3)
    np.testing.assert_allclose(y[3], alone[0], rtol=1e-5, atol=1e-6)  # y_L: the whole text's prediction
    np.testing.assert_allclose(y[5], y[3])  # padding repeats y_L
    np.testing.assert_array_equal(a[4:], 0)
    # y_2 is the prediction for the text cut after two tokens, when the model reads one direction
    uni = TextClassifier(ModelConfig(vocab_size=30, classes=3, k=6, units=5, pooling=pooling, bidirectional=False),
                         key=jax.random.key(1))
    _, y_uni = uni.trace(text)
    np.testing.assert_allclose(y_uni[1], uni.predict_proba(text[None, :2], jnp.array([2]))[0], rtol=1e-5, atol=1e-6)


# -- training ----------------------------------------------------------------------------------------------

def toy_dataset(n: int = 240, seed: int = 0) -> Dataset:
    """Label = does the text mention a 'good' word; noise words around it. Learnable, not trivial."""
    rng = np.random.default_rng(seed)
    good, bad, noise = ["great", "love", "happy"], ["awful", "hate", "sad"], [f"w{i}" for i in range(30)]
    splits = {}
    for split, size in (("train", n), ("val", n // 4), ("test", n // 4)):
        texts, labels = [], []
        for _ in range(size):
            y = int(rng.integers(2))
            words = list(rng.choice(noise, size=int(rng.integers(2, 12))))
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(good if y else bad)))
            texts.append(" ".join(words))
            labels.append(y)
        splits[split] = Split(texts, np.array(labels))
    return Dataset("toy", ("neg", "pos"), splits, "toy")


SMALL = dict(embeddings=None, k=8, units=8, maxlen=16, batch_size=16, epochs=4, lr=1e-2, patience=10, ema=0.0)


def leaves(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def test_fit_learns_and_a_seed_fixes_everything():
    ds = toy_dataset()
    calls = []
    config = Config(**{**SMALL, "epochs": 8})
    r1 = fit(config, ds, progress=False, callback=lambda e, s, h: calls.append((e, s)))
    assert r1.best_score > 0.95 and r1.test["score"] > 0.95
    assert [e for e, _ in calls] == list(range(1, 9)) and r1.best_score == max(s for _, s in calls)
    r2 = fit(config, ds, progress=False)
    for x, y in zip(leaves(r1.model), leaves(r2.model), strict=True):
        np.testing.assert_array_equal(x, y)
    r3 = fit(Config(**{**SMALL, "epochs": 8, "seed": 1}), ds, progress=False)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(r1.model), leaves(r3.model), strict=True))


def test_callback_stops_and_early_stopping_keeps_the_best():
    ds = toy_dataset()
    r = fit(Config(**SMALL), ds, progress=False, callback=lambda e, s, h: e >= 2)
    assert len(r.history) == 2
    r = fit(Config(**{**SMALL, "epochs": 30, "patience": 1, "lr": 0.05}), ds, progress=False)
    scores = [h["val_score"] for h in r.history]
    assert len(r.history) < 30 and scores[-1] <= r.best_score == max(scores)
    assert r.val["score"] == pytest.approx(r.best_score)  # the kept model is the best epoch's


def test_an_ensemble_averages_its_members(tmp_path):
    ds = toy_dataset(n=64)
    r = fit(Config(**{**SMALL, "epochs": 2, "members": 3}), ds, tmp_path / "run", progress=False)
    assert len(r.members) == 3
    assert not np.array_equal(r.members[0].rnn.layers[0].forward.cell.W_a, r.members[1].rnn.layers[0].forward.cell.W_a)
    texts = ds["test"].texts
    ids, lengths = encode(texts, r.vocab, 16)
    mean = np.mean([predict_proba(m, ids, lengths) for m in r.members], axis=0)
    run = load_run(tmp_path / "run")
    np.testing.assert_allclose(run.predict_proba(texts), mean, rtol=1e-6, atol=1e-7)
    _, a, y = run.trace(texts[0])
    np.testing.assert_allclose(y[-1], mean[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, run.model.trace(jnp.asarray(ids[0, : lengths[0]]))[0])


def test_frozen_embeddings_stay_fixed():
    ds = toy_dataset(n=64)
    r = fit(Config(**{**SMALL, "freeze_embeddings": True, "epochs": 1}), ds, progress=False)
    start = TextClassifier(r.model.config, key=jax.random.fold_in(jax.random.key(0), 0))
    np.testing.assert_array_equal(r.model.E, start.E)


def test_validation_split_is_carved_when_missing():
    ds = toy_dataset(n=100)
    no_val = Dataset(ds.task, ds.labels, {"train": ds["train"]}, "toy")
    r = fit(Config(**{**SMALL, "epochs": 1}), no_val, progress=False)
    assert r.val["n"] == 10 and r.test is None


def test_save_and_load_run_give_the_same_probabilities(tmp_path):
    ds = toy_dataset(n=64)
    r = fit(Config(**{**SMALL, "epochs": 1}), ds, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    texts = ds["test"].texts
    ids, lengths = encode(texts, r.vocab, 16)
    np.testing.assert_array_equal(run.predict_proba(texts), predict_proba(r.model, ids, lengths))
    assert run.labels == ("neg", "pos") and run.vocab.tokens == r.vocab.tokens and run.metric == "macro_f1"
    metrics_json = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics_json["test"]["macro_f1"] == pytest.approx(r.test["score"])
    tokens, a, y = run.trace(texts[0])
    assert a.shape == (len(tokens), 16) and y.shape == (len(tokens), 2)
    np.testing.assert_allclose(y[-1], run.predict_proba(texts[:1])[0], rtol=1e-5, atol=1e-6)
    # a checkpoint holds no pickle: JSON and safetensors only, and the finished run no optimiser state
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".lock", "config.json", "metrics.json", "model.safetensors"]


def test_load_run_rejects_a_mismatched_file(tmp_path):
    m = TextClassifier(ModelConfig(vocab_size=5, classes=2, k=4, units=3), key=jax.random.key(0))
    save_run(tmp_path, m, {}, Vocabulary(["<pad>", "<unk>", "a", "b", "c"]), ("x", "y"), "toy", "macro_f1")
    info = json.loads((tmp_path / "config.json").read_text())
    info["model"]["units"] = 4
    (tmp_path / "config.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="has shape"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config\.json: no such file"):
        load_run(tmp_path / "nothing")


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import rnnlab.checkpoint as checkpoint
from test_train import toy_dataset, SMALL
from rnnlab.train import Config, fit

# SIGKILL mid-epoch at a fixed point, whatever the machine's speed: at the first checkpoint after a mid-epoch
# one of epoch >= 1, before writing it, so the steps since the last checkpoint are lost.
save, armed = checkpoint.save_arrays, []
def save_or_die(path, arrays, meta=None):
    if armed:
        os.kill(os.getpid(), signal.SIGKILL)
    save(path, arrays, meta)
    if meta and meta.get("epoch", 0) >= 1 and meta.get("step_in_epoch", 0) > 0:
        armed.append(meta)
checkpoint.save_arrays = save_or_die
fit(Config(**{{**SMALL, "epochs": 3, "checkpoint_every": 3}}), toy_dataset(), {out!r}, progress=False)
"""


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    out = tmp_path / "run"
    script = KILL_SCRIPT.format(tests=str(REPO / "tests"), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, "the training subprocess was not killed"
    meta = load_arrays(out / STATE)[1]
    assert meta["epoch"] >= 1 and meta["step_in_epoch"] > 0, "the last checkpoint is not a mid-epoch one"
    killed_at = load_arrays(out / STATE)[1]
    assert killed_at["epoch"] < 3
    resumed = fit(Config(**{**SMALL, "epochs": 3, "checkpoint_every": 3}), toy_dataset(), out, resume=True,
                  progress=False)
    whole = fit(Config(**{**SMALL, "epochs": 3}), toy_dataset(), progress=False)
    for x, y in zip(leaves(resumed.model), leaves(whole.model), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert [h["val_score"] for h in resumed.history] == [h["val_score"] for h in whole.history]
    np.testing.assert_allclose([h["train_loss"] for h in resumed.history],
                               [h["train_loss"] for h in whole.history], rtol=1e-5)


# -- fit's pieces: prepare, the training state, the loop ----------------------------------------------------

def _vectors(tmp_path: Path, k: int = 6) -> Path:
    """A tiny word2vec text file over the toy words."""
    rng = np.random.default_rng(3)
    words = ["great", "love", "happy", "awful", "hate", "sad", *(f"w{i}" for i in range(0, 30, 2))]
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} {' '.join(f'{v:.4f}' for v in rng.normal(size=k))}\n" for w in words))
    return path


def test_a_training_state_saved_and_loaded_whole_is_the_same(tmp_path):
    """TrainingState.to_arrays/meta through state.safetensors and back (`from_arrays` onto a template of
    shapes alone) gives every array and the position back exactly."""
    from rnnlab import checkpoint, train

    config = Config(**{**SMALL, "members": 2, "ema": 0.9, "subwords": 50})
    prep = train.prepare(config, toy_dataset())
    members, key = train.init_members(prep.model_config, prep.E, prep.grams, config.seed, 2)
    params, static = eqx.partition(members, tuple(train.trainable(m) for m in members))
    state = train.TrainingState.start(params)
    fixed = (static, train.StepConfig.of(config), jnp.asarray(train.schedule(config, 8)), key)
    b = make(*prep.train, toy_dataset()["train"].labels, 16, np.arange(16), 16)
    state.step, loss = train._train_step(fixed, state.step, *jax.device_put((b.tokens, b.lengths, b.labels, b.weights)))
    state.losses, state.step_in_epoch, state.global_step, state.best_score = [loss], 1, 1, 0.5
    state.history = [{"epoch": 1, "train_loss": 0.7, "val_score": 0.5, "seconds": 1.0}]
    checkpoint.save_arrays(tmp_path / STATE, state.to_arrays(), state.meta(12.5))
    arrays, meta = checkpoint.read_state(tmp_path / STATE)
    template = train.TrainingState(eqx.filter_eval_shape(train.init_state, params), params)
    back = train.TrainingState.from_arrays(template, arrays, meta, "state")
    assert set(back.to_arrays()) == set(state.to_arrays()) and len(arrays) > 20
    for name, a in state.to_arrays().items():
        np.testing.assert_array_equal(back.to_arrays()[name], a, err_msg=name)
    assert back.meta() == {**state.meta(12.5), "epoch_losses": [float(loss)]} and back.elapsed == 12.5
    assert (back.best_score, back.step_in_epoch, back.global_step) == (0.5, 1, 1)


def test_prepare_builds_the_vocabulary_the_tuner_counts(tmp_path):
    """tune.task's parameter count comes from the same vocabulary as a fit's model: with pretrained vectors
    and vector_words extending the vocabulary, the counts agree with the fitted members'."""
    from rnnlab import train
    from rnnlab.tune.task import TrainTask, count, trained

    config = Config(**{**SMALL, "embeddings": str(_vectors(tmp_path)), "vector_words": 4, "epochs": 1,
                       "members": 2, "subwords": 40})
    ds = toy_dataset()
    prep = train.prepare(config, ds)
    assert prep.model_config.k == 6 and prep.E.shape == (len(prep.vocab), 6) and prep.grams.shape[0] == len(prep.vocab)
    ids, lengths = prep.train
    assert ids.shape == (len(ds["train"]), config.maxlen) and lengths.max() <= config.maxlen
    result = fit(config, ds, progress=False)
    assert result.vocab.tokens == prep.vocab.tokens
    assert TrainTask(ds, config).parameters(config) == (sum(trained(m, result.trained_rows) for m in result.members),
                                                         sum(count(m.rnn) for m in result.members))


def test_a_one_epoch_fit_traces_few_programs(tmp_path):
    """Model building, the optimiser's start, the finiteness checks and the copies are each one program
    over the whole tree, not one per weight: a 1-epoch fit with pretrained vectors (sizes no other test
    uses) traces at most 10 programs."""
    import jax.monitoring

    traced = []

    def listen(event, seconds, **kw):
        if event.endswith("jaxpr_trace_duration"):
            traced.append(kw.get("fun_name", event))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        config = Config(**{**SMALL, "embeddings": str(_vectors(tmp_path, k=5)), "units": 5, "epochs": 1,
                           "maxlen": 24, "ema": 0.9, "subwords": 30, "checkpoint_every": 3})
        fit(config, toy_dataset(200, seed=4), tmp_path / "run", progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert 0 < len(traced) <= 10, traced


def test_a_finished_run_writes_no_state_after_its_last_epoch(tmp_path, monkeypatch):
    """state.safetensors is written after every epoch but the last of a run that then finishes and removes
    it; kept (keep_state), it is written after the last epoch too, and resuming it finds nothing to do."""
    from rnnlab import checkpoint
    from rnnlab.train import RunFinishedError

    writes = []
    save = checkpoint.save_arrays
    monkeypatch.setattr(checkpoint, "save_arrays",
                        lambda path, *a, **kw: (writes.append(Path(path).name), save(path, *a, **kw))[1])
    config = Config(**{**SMALL, "epochs": 3, "checkpoint_every": 0})
    fit(config, toy_dataset(), tmp_path / "a", progress=False)
    assert writes.count(STATE) == 2 and not (tmp_path / "a" / STATE).exists()
    writes.clear()
    fit(config, toy_dataset(), tmp_path / "b", progress=False, keep_state=True)
    assert writes.count(STATE) == 3 and load_arrays(tmp_path / "b" / STATE)[1]["epoch"] == 3
    with pytest.raises(RunFinishedError):
        fit(config, toy_dataset(), tmp_path / "b", progress=False, resume=True)
