"""The quality suite's pieces: the UMSAB readers and the small-data cut, the TF-IDF floor in a run, seeded
runs, and the hashed character n-grams of x_t (`rnnlab.data.subwords`)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab.baseline import CS, fit_floor
from rnnlab.checkpoint import METRICS, load_run
from rnnlab.data import subwords
from rnnlab.data.dataset import Dataset, Split
from rnnlab.metrics import official_metric, report
from rnnlab.models import ModelConfig, TextClassifier
from rnnlab.train import Config, fit

REPO = Path(__file__).resolve().parents[1]
UMSAB = REPO.parent / "shared" / "data" / "umsab"


def _quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def umsab() -> Path:
    if not UMSAB.is_dir():
        pytest.skip(f"UMSAB data not found at {UMSAB}")
    return UMSAB


def tiny(n: int = 48) -> Dataset:
    """Three classes told apart by a word each (with misspellings), and filler words: learnable in an epoch."""
    rng = np.random.default_rng(0)
    cue = [["awful", "awfull", "awfuuul"], ["table", "tables", "tabel"], ["lovely", "lovelyy", "lovley"]]
    filler = ["the", "a", "of", "we", "they", "it", "was", "so", "very", "day"]

    def split(m):
        labels = np.arange(m) % 3
        texts = [" ".join([*rng.choice(filler, 3), rng.choice(cue[c]), *rng.choice(filler, 2)]) for c in labels]
        return Split(texts, labels)

    return Dataset("toy", ("neg", "neu", "pos"), {"train": split(n), "val": split(24), "test": split(24)})


SMALL = dict(embeddings=None, k=8, units=8, bidirectional=False, maxlen=16, epochs=2, batch_size=8,
             checkpoint_every=0, subwords=512, seed=3)  # one compiled step for every fit of this file


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, object]:
    """A tiny run on disk with subwords and the floor (the default), and its FitResult."""
    out = tmp_path_factory.mktemp("quality") / "run"
    return out, fit(Config(**SMALL), tiny(), out, progress=False)


# -- readers ---------------------------------------------------------------------------------------------

def test_umsab_folders_read_with_their_documented_labels(umsab):
    quality = _quality()
    for language in ("english", "french", "italian", "spanish"):
        d = quality.load_task(language, umsab.parent)
        assert d.labels == ("negative", "neutral", "positive")
        assert {s: len(d[s]) for s in ("train", "val", "test")} == {"train": 1839, "val": 324, "test": 870}
        lines = (umsab / language / "train_labels.txt").read_text().split()
        assert d["train"].labels.tolist() == [int(v) for v in lines]  # line i of the labels, in order
        assert d["train"].texts[0] == (umsab / language / "train_text.txt").read_text().split("\n")[0]
        assert official_metric(d.task) == "macro_f1"


def test_small_cut_is_seeded_stratified_and_drawn_from_train(umsab):
    quality = _quality()
    full = quality.load_task("english", umsab.parent)["train"]
    a, b = (quality.load_task("english@500", umsab.parent, seed=0)["train"] for _ in range(2))
    c = quality.load_task("english@500", umsab.parent, seed=1)["train"]
    assert len(a) == 500 and a.texts == b.texts and a.texts != c.texts
    share = np.bincount(full.labels, minlength=3) / len(full)
    assert np.abs(np.bincount(a.labels, minlength=3) - 500 * share).max() <= 1
    pairs = set(zip(full.texts, full.labels.tolist(), strict=True))
    assert all((t, int(y)) in pairs for t, y in zip(a.texts, a.labels, strict=True))


# -- the floor -------------------------------------------------------------------------------------------

def test_floor_chooses_C_on_val_and_scores_it():
    d = tiny()
    floor = fit_floor(d["train"], d["val"], d.labels, d.task)
    assert set(floor.val_by_C) == set(CS) and floor.val_by_C[floor.C] == max(floor.val_by_C.values())
    assert floor.val["score"] == floor.val_by_C[floor.C]
    pred = floor.predict(d["val"].texts)
    f1 = []
    for c in range(3):  # macro-F1 by hand
        tp = np.sum((pred == c) & (d["val"].labels == c))
        f1.append(2 * tp / max(np.sum(pred == c) + np.sum(d["val"].labels == c), 1))
    assert floor.val["score"] == pytest.approx(np.mean(f1))
    assert floor.val["score"] > 0.9  # one cue word per class: the n-grams find it


def test_the_floor_of_the_same_splits_is_fitted_once(tmp_path, monkeypatch):
    from rnnlab import baseline

    monkeypatch.setenv(baseline.CACHE_ENV, str(tmp_path / "floors"))
    d = tiny()
    first = baseline.floor_report(d["train"], d["val"], d["test"], d.labels, d.task)
    assert "cached" not in first and len(list((tmp_path / "floors").iterdir())) == 1

    def refit(*args, **kwargs):
        raise AssertionError("fitted again")

    monkeypatch.setattr(baseline, "fit_floor", refit)
    again = baseline.floor_report(d["train"], d["val"], d["test"], d.labels, d.task)
    assert again == {**first, "cached": True}
    # one label changed, or no test split: another floor, fitted
    labels = d["train"].labels.copy()
    labels[0] = (labels[0] + 1) % len(d.labels)
    other = Split(d["train"].texts, labels)
    for args in ((other, d["val"], d["test"]), (d["train"], d["val"], None)):
        with pytest.raises(AssertionError, match="fitted again"):
            baseline.floor_report(*args, d.labels, d.task)
    # a damaged entry is fitted again; the cache turned off reads and writes nothing
    monkeypatch.undo()
    monkeypatch.setenv(baseline.CACHE_ENV, str(tmp_path / "floors"))
    (entry,) = (tmp_path / "floors").iterdir()
    entry.write_text("{oops")
    refitted = baseline.floor_report(d["train"], d["val"], d["test"], d.labels, d.task)
    assert "cached" not in refitted and {**refitted, "seconds": 0} == {**first, "seconds": 0}
    monkeypatch.setenv(baseline.CACHE_ENV, "0")
    assert "cached" not in baseline.floor_report(d["train"], d["val"], d["test"], d.labels, d.task)
    assert len(list((tmp_path / "floors").iterdir())) == 1


def test_splits_whose_texts_hold_tabs_and_newlines_get_floors_of_their_own(tmp_path, monkeypatch):
    from rnnlab import baseline

    monkeypatch.setenv(baseline.CACHE_ENV, str(tmp_path / "floors"))
    val = Split(["b"], [0])
    # one text holding "\n0\t" against two texts: written as "label\ttext\n" one after another, they read alike
    one, two = Split(["a\n0\tb"], [1]), Split(["a", "b"], [1, 0])
    assert baseline._cached(one, val, None, ("x", "y"), "t") != baseline._cached(two, val, None, ("x", "y"), "t")
    assert baseline._cached(one, val, None, ("x", "y"), "t") == baseline._cached(one, val, None, ("x", "y"), "t")


def test_a_run_reports_the_floor_beside_the_model(run):
    out, result = run
    d = tiny()
    m = json.loads((out / METRICS).read_text())
    floor = fit_floor(d["train"], d["val"], d.labels, d.task)
    assert m["baseline"]["val"] == pytest.approx(floor.val["score"]) and m["baseline"]["C"] == floor.C
    assert m["baseline"]["test"] == pytest.approx(floor.evaluate(d["test"])["score"])
    assert result.baseline == m["baseline"]


def test_cli_train_prints_the_floor_and_no_baseline_turns_it_off(run, tmp_path):
    from typer.testing import CliRunner

    from rnnlab.cli import app

    d = tiny()
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mapping.txt").write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(d.labels)))
    for s in ("train", "val", "test"):
        (folder / f"{s}_text.txt").write_text("\n".join(d[s].texts) + "\n")
        (folder / f"{s}_labels.txt").write_text("\n".join(map(str, d[s].labels)) + "\n")
    common = ["--embeddings", "none", "--k", "8", "--units", "8", "--unidirectional", "--maxlen", "16", "--epochs",
              "1", "--batch-size", "8", "--subwords", "512", "--quiet"]
    runner = CliRunner()
    shown = runner.invoke(app, ["evaluate", str(run[0]), str(folder), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["baseline"] == run[1].baseline
    shown = runner.invoke(app, ["evaluate", str(run[0]), str(folder)])
    assert shown.exit_code == 0 and "floor, TF-IDF + LR" in shown.output
    off = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "off"), *common, "--no-baseline"])
    assert off.exit_code == 0, off.output
    assert "floor, TF-IDF + LR" not in off.output
    assert json.loads((tmp_path / "off" / METRICS).read_text())["baseline"] is None


# -- seeds -----------------------------------------------------------------------------------------------

def test_seeded_runs_give_the_same_scores(run):
    first = run[1]
    again = fit(Config(**SMALL), tiny(), progress=False)
    assert [h["val_score"] for h in first.history] == [h["val_score"] for h in again.history]
    assert first.test["score"] == again.test["score"]
    a, b = np.asarray(first.model.H), np.asarray(again.model.H)
    assert np.array_equal(a, b) and np.abs(a).max() > 0 and not a[0].any()  # row 0 (no n-gram) never learns


# -- subwords --------------------------------------------------------------------------------------------

def test_grams_are_fasttexts_with_boundary_marks():
    assert subwords.grams("cat") == ["<ca", "cat", "at>", "<cat", "cat>", "<cat>"]
    assert subwords.grams("@user") == [] and subwords.grams("!") == [] and subwords.grams("<url>") == []
    assert len(subwords.grams("happy")) == 5 + 4 + 3  # 7 characters with the marks: 5 trigrams, 4, 3


def test_hashing_is_the_same_in_every_process():
    words = ["happy", "joyeux", "😂😂", "#blessed"]
    here = subwords.table(words, 1000).tolist()
    code = ("import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('s', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            f"print(json.dumps(m.table({words!r}, 1000).tolist()))")
    env = dict(os.environ, PYTHONHASHSEED="1")  # this process's string hashes are salted otherwise
    out = subprocess.run([sys.executable, "-c", code, subwords.__file__], capture_output=True, text=True, env=env,
                         check=True)
    assert json.loads(out.stdout) == here
    assert subwords.bucket("<ha", 1000) == 1 + zlib.crc32(b"<ha") % 1000


def test_table_pads_with_zero_and_shares_rows_between_spellings():
    t = subwords.table(["<pad>", "<unk>", "happy", "happpy", "tree"], 100_000, max_grams=32)
    assert t.shape == (5, 32) and not t[:2].any()
    happy, happpy, tree = (set(row[row > 0].tolist()) for row in t[2:])
    assert len(happy) == 12 and happy & happpy and not happy & tree


def _model(vocab: list[str], buckets: int = 64) -> TextClassifier:
    config = ModelConfig(vocab_size=len(vocab), classes=2, k=4, units=3, subword_buckets=buckets,
                         subword_grams=subwords.MAX_GRAMS)
    model = TextClassifier(config, key=jax.random.key(0), grams=subwords.table(vocab, buckets))
    H = jax.random.normal(jax.random.key(1), model.H.shape).at[0].set(0.0)
    return eqx.tree_at(lambda m: m.H, model, H)


def test_a_word_with_no_row_of_its_own_gets_its_ngrams_vector():
    vocab = ["<pad>", "<unk>", "happy", "happyyy"]
    model = _model(vocab)
    model = eqx.tree_at(lambda m: m.E, model, model.E.at[3].set(0.0))  # no trained row for "happyyy"
    x = np.asarray(model.embed(jnp.array([3])))[0]
    rows = sorted({subwords.bucket(g, 64) for g in subwords.grams("happyyy")})
    assert np.allclose(x, np.asarray(model.H)[rows].mean(axis=0), atol=1e-6) and np.abs(x).max() > 0
    assert np.array_equal(np.asarray(model.embed(jnp.array([0]))), np.zeros((1, 4)))  # <pad>: nothing


def test_padding_does_not_change_a_text_with_subwords():
    vocab = ["<pad>", "<unk>", "happy", "sad", "day", "today"]
    model = _model(vocab)
    texts = [[2, 4, 5], [3, 5, 2, 4, 4]]
    call = eqx.filter_jit(lambda m, tokens, lengths: m(tokens, lengths))
    alone = [call(model, jnp.array([t]), jnp.array([len(t)])) for t in texts]
    tokens = jnp.array([t + [0] * (8 - len(t)) for t in texts])
    both = call(model, tokens, jnp.array([len(t) for t in texts]))
    assert np.allclose(np.asarray(both), np.concatenate([np.asarray(a) for a in alone]), atol=1e-5)


def test_a_subword_run_loads_back_with_its_table(run):
    out, result = run
    d = tiny()
    loaded = load_run(out)
    assert np.array_equal(np.asarray(loaded.model.grams), np.asarray(result.model.grams))
    assert np.array_equal(np.asarray(loaded.model.H), np.asarray(result.model.H))
    pred = loaded.predict_proba(d["test"].texts).argmax(axis=1)
    assert report(d["test"].labels, pred, d.labels, d.task)["score"] == pytest.approx(result.test["score"])


def test_the_cached_gram_table_is_the_table_and_survives_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv(subwords.CACHE_ENV, str(tmp_path))
    words = ["happy", "happpy", "tree", "été", "<unk>", "x"]
    direct = subwords.table(words, 97)
    first = subwords.cached_table(words, 97)              # hashed and written
    (path,) = tmp_path.glob("*.npy")
    assert np.array_equal(first, direct) and np.array_equal(np.load(path), direct)
    assert np.array_equal(subwords.cached_table(words, 97), direct)      # read back
    assert not np.array_equal(subwords.cached_table(words, 89), direct)  # another B: another entry
    path.write_bytes(b"not an array")
    assert np.array_equal(subwords.cached_table(words, 97), direct)      # damaged: hashed again
    np.save(path, np.full_like(direct, 98))                                # right shape, rows past H
    assert np.array_equal(subwords.cached_table(words, 97), direct) and np.array_equal(np.load(path), direct)
    monkeypatch.setenv(subwords.CACHE_ENV, "0")
    assert np.array_equal(subwords.cached_table(words[:3], 97), direct[:3]) and len(list(tmp_path.glob("*.npy"))) == 2


def test_a_trainings_gram_table_is_every_tokens_own_ngrams():
    from rnnlab.train import Config, prepare

    d = tiny()
    prep = prepare(Config(epochs=1, subwords=512, vector_words=300, baseline=False), d)
    assert len(prep.vocab) > prep.trained  # vector words, their rows from the vectors' cached table
    assert np.array_equal(prep.grams, subwords.table(prep.vocab.tokens, 512))
