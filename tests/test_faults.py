"""Training under faults: options that make no sense, non-finite numbers, a second process, a kill in the
middle of a checkpoint write, a resume on other data. Each case is refused with one line (no traceback) or
ends in a run that resumes exactly. docs/faults.md lists the promises these tests hold."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from rnnlab import checkpoint, metrics
from rnnlab import data as rdata
from rnnlab import train as train_mod
from rnnlab.checkpoint import METRICS, MODEL, STATE, load_arrays, load_run
from rnnlab.cli import app
from rnnlab.data import Dataset, Split
from rnnlab.data.embeddings import read_text_vectors
from rnnlab.train import Config, RunFinishedError, TrainingDivergedError, fit

sys.path.insert(0, str(Path(__file__).parent))
from test_train import SMALL, leaves, toy_dataset

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
THREE = {**SMALL, "epochs": 3, "checkpoint_every": 3}   # 15 steps an epoch on toy_dataset()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *words: str) -> None:
    """Exit status 2, no traceback, and every word in the message."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for w in words:
        assert w in result.output, (w, result.output)


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory) -> Path:
    """toy_dataset() as one CSV with a split column."""
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    ds = toy_dataset()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for name, split in ds.splits.items():
            for text, y in zip(split.texts, split.labels, strict=True):
                w.writerow([text, ds.labels[y], name])
    return path


@pytest.fixture(scope="module")
def whole():
    """THREE trained without interruption, in memory: what every resumed run must equal."""
    return fit(Config(**THREE), toy_dataset(), progress=False)


def assert_same_run(resumed, whole):
    for x, y in zip(leaves(resumed.model), leaves(whole.model), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert [h["val_score"] for h in resumed.history] == [h["val_score"] for h in whole.history]
    # the epoch a resume lands in averages all of its steps, those before the resume included
    np.testing.assert_allclose([h["train_loss"] for h in resumed.history],
                               [h["train_loss"] for h in whole.history], rtol=1e-5)


# -- options that make no sense ------------------------------------------------

BAD_OPTIONS = [
    (["--epochs", "0"], ["--epochs 0", "whole number >= 1"]),
    (["--epochs", "-1"], ["--epochs -1"]),
    (["--patience", "0"], ["--patience 0", ">= 1"]),
    (["--batch-size", "0"], ["--batch-size 0", "B, the texts per step"]),
    (["--batch-size", "-2"], ["--batch-size -2"]),
    (["--lr", "-1"], ["--lr -1.0", "learning rate", "finite number in (0, inf)"]),
    (["--lr", "nan"], ["--lr nan", "finite"]),
    (["--lr", "inf"], ["--lr inf", "finite"]),
    (["--clip", "-1"], ["--clip -1.0"]),
    (["--clip", "0"], ["--clip 0.0", "(0, inf)"]),
    (["--clip", "nan"], ["--clip nan"]),
    (["--weight-decay", "nan"], ["--weight-decay nan"]),
    (["--embed-lr", "nan"], ["--embed-lr nan"]),
    (["--embed-dropout", "1.0"], ["--embed-dropout 1.0", "[0, 1)"]),
    (["--dropout", "1"], ["--dropout 1.0", "[0, 1)"]),
    (["--ema", "1"], ["--ema 1.0"]),
    (["--max-vocab", "0"], ["--max-vocab 0", "<pad>, <unk>"]),
    (["--checkpoint-every", "-1"], ["--checkpoint-every -1", ">= 0"]),
    (["--units", "0"], ["--units 0", "p, the units"]),
    (["--maxlen", "0"], ["--maxlen 0"]),
    (["--max-seconds", "nan"], ["--max-seconds nan"]),
    (["--batch-size", "100000000"], ["needs about", "is available", "lower --batch-size"]),
    (["--units", "100000"], ["needs about", "weights", "--units 100000"]),
    (["--maxlen", "1000000000"], ["needs about", "ids", "--maxlen 1000000000"]),
]


@pytest.mark.parametrize("option, words", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_options_are_refused_in_one_line(toy_csv, tmp_path, option, words):
    out = tmp_path / "run"
    result = invoke("train", toy_csv, "--out", out, "--embeddings", "none", "--quiet", *option)
    one_line_error(result, *words)
    assert not out.exists()  # nothing written: not even the folder


def test_an_out_that_is_a_file_is_refused(toy_csv, tmp_path):
    (tmp_path / "run").write_text("not a folder")
    result = invoke("train", toy_csv, "--out", tmp_path / "run", "--embeddings", "none", "--quiet")
    one_line_error(result, "is a file, not a run folder")
    assert (tmp_path / "run").read_text() == "not a folder"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e39"])
def test_a_non_finite_word_vector_is_refused_with_its_line(tmp_path, toy_csv, value):
    path = tmp_path / "vectors.txt"
    path.write_text(f"great 0.1 0.2 0.3\nlove 0.4 {value} 0.6\n")
    with pytest.raises(ValueError, match=rf"vectors\.txt:2: the vector of 'love' holds '{value}'"):
        read_text_vectors(path)
    result = invoke("train", toy_csv, "--out", tmp_path / "run", "--embeddings", path, "--quiet")
    one_line_error(result, "vectors.txt:2", "finite")


def test_a_glove_file_with_tabs_reads_as_with_spaces(tmp_path):
    spaces, tabs = tmp_path / "spaces.txt", tmp_path / "tabs.txt"
    spaces.write_text("great 0.1 0.2 0.3\nlove -0.5 0.25 1e-3\n")
    tabs.write_text("great\t0.1\t0.2\t0.3\nlove\t-0.5 \t0.25\t1e-3\t\n")
    a, b = read_text_vectors(spaces), read_text_vectors(tabs)
    assert a.words == b.words == ["great", "love"]
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(b.vectors[1], np.float32([-0.5, 0.25, 1e-3]))


def test_a_label_set_larger_than_the_data_is_refused():
    texts = [f"text {i}" for i in range(20)]
    ds = Dataset("many", tuple(f"c{i}" for i in range(30)),
                 {"train": Split(texts, np.arange(20)), "val": Split(texts[:5], np.arange(5))}, "many.csv")
    with pytest.raises(ValueError, match="30 labels for 20 training texts"):
        fit(Config(**SMALL), ds, progress=False)


def test_the_confusion_matrix_is_bounded_past_many_classes():
    rng = np.random.default_rng(0)
    # 150 classes: past the dense limit; the scores equal those of the dense matrix
    y_true, y_pred = rng.integers(0, 150, 400), rng.integers(0, 150, 400)
    y_pred[:200] = y_true[:200]
    labels = [f"c{i}" for i in range(150)]
    r = metrics.report(y_true, y_pred, labels)
    M = metrics.confusion(y_true, y_pred, 150)
    assert r["confusion"] is None and r["macro_f1"] == pytest.approx(metrics.score("macro_f1", M, labels))
    assert r["accuracy"] == pytest.approx(metrics.score("accuracy", M, labels))
    cells = {(i, j): n for i, j, n in r["confusion_cells"]}
    assert cells == {(int(i), int(j)): int(M[i, j]) for i, j in zip(*np.nonzero(M), strict=True)}
    # 20 000 classes on 300 examples: the report stays the size of the examples, not of C x C
    big = metrics.report(rng.integers(0, 20_000, 300), rng.integers(0, 20_000, 300), [str(i) for i in range(20_000)])
    assert len(big["confusion_cells"]) <= 300 and len(json.dumps(big)) < 3_000_000
    small = metrics.report(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    assert small["confusion"] == [[1, 0], [1, 1]] and "confusion_cells" not in small


# -- a loss that turns NaN --------------------------------------------------------------

def test_a_nan_loss_stops_training_and_the_last_good_checkpoint_resumes_exactly(tmp_path, monkeypatch, capsys,
                                                                                 whole):
    out = tmp_path / "run"
    real, calls = train_mod._train_step, []

    def poisoned(*args, **kwargs):
        *rest, loss = real(*args, **kwargs)
        calls.append(1)
        return (*rest, loss * jnp.nan if len(calls) == 20 else loss)

    monkeypatch.setattr(train_mod, "_train_step", poisoned)
    with pytest.raises(TrainingDivergedError) as err:
        fit(Config(**THREE), toy_dataset(), out, progress=True)
    assert str(err.value).startswith("the training loss became nan at step 20 (epoch 2, step 5 of 15): "
                                     "training stopped")
    assert "last good checkpoint (step 18)" in str(err.value) and "best model (epoch 1)" in str(err.value)
    assert load_arrays(out / STATE)[1]["global_step"] == 18
    assert all(np.isfinite(x).all() for x in leaves(load_run(out).model))
    # off a terminal, progress is one plain line per epoch on stderr
    logged = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in logged if line.startswith("epoch")] == ["epoch 1/3"]

    monkeypatch.setattr(train_mod, "_train_step", real)
    said = []
    resumed = fit(Config(**THREE), toy_dataset(), out, resume=True, progress=False, say=said.append)
    assert said == [f"resuming {out} at epoch 2 of 3, step 3 of 15 (18 steps done)"]
    assert_same_run(resumed, whole)
    assert not (out / STATE).exists()  # removed when the run finished


def test_a_learning_rate_that_diverges_is_stopped_in_memory_too():
    at = r"became (nan|inf|NaN or inf) at step \d+ \(epoch 1, step \d+ of 15\): training stopped"
    with pytest.raises(TrainingDivergedError, match=at):
        fit(Config(**{**THREE, "lr": 1e30}), toy_dataset(), progress=False)


# -- kills ------------------------------------------------------------------------

KILL_IN_WRITE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_train import toy_dataset
from test_faults import THREE
from rnnlab.train import Config, fit

# SIGKILL in the middle of the 8th write of state.safetensors (at step 21, epoch 2; steps 3, 6, ..., 15, the end
# of epoch 1, 18, 21): its temporary file holds half of the bytes, the rename has not happened
fsync, writes = os.fsync, []
def fsync_or_die(fd):
    name = os.readlink(f"/proc/self/fd/{{fd}}")
    if os.path.basename(name).startswith(".state.safetensors.") and name.endswith(".tmp"):
        writes.append(name)
        if len(writes) == 8:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    fsync(fd)
os.fsync = fsync_or_die
fit(Config(**THREE), toy_dataset(), {out!r}, progress=True)
"""


def test_a_kill_during_the_checkpoint_write_resumes_exactly(tmp_path, whole):
    out = tmp_path / "run"
    script = KILL_IN_WRITE.format(tests=str(REPO / "tests"), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          timeout=600, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    # progress off a terminal is flushed line by line: the killed process's log shows the epoch it finished
    assert [line.split("  ")[0] for line in proc.stderr.decode().splitlines() if line.startswith("epoch")] == [
        "epoch 1/3"]
    orphans = list(out.glob(".state.safetensors.*.tmp"))
    assert len(orphans) == 1 and orphans[0].stat().st_size < (out / STATE).stat().st_size
    assert load_arrays(out / STATE)[1]["global_step"] == 18   # the checkpoint before the killed write
    said = []
    resumed = fit(Config(**THREE), toy_dataset(), out, resume=True, progress=False, say=said.append)
    assert said[0] == f"removed 1 temporary file(s) a killed write left in {out}"
    assert said[1] == f"resuming {out} at epoch 2 of 3, step 3 of 15 (18 steps done)"
    assert not list(out.glob(".*.tmp"))
    assert_same_run(resumed, whole)


def test_a_second_process_is_refused_at_once_naming_the_holder(toy_csv, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # another process holds the run's OS lock (flock on RUN/.lock, its pid written in it)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        result = invoke("train", toy_csv, "--out", out, "--embeddings", "none", "--quiet")
        one_line_error(result, f"is being trained by process {holder.pid}", "choose another --out")
        with pytest.raises(checkpoint.RunLockedError, match=str(holder.pid)):
            fit(Config(**SMALL), toy_dataset(), out, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (out / checkpoint.CONFIG).exists()
    with checkpoint.lock(out):   # released by the OS when its holder died
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(checkpoint.RunLockedError, match=f"process {os.getpid()}"), checkpoint.lock(out):
            pass


def test_two_trainings_started_together_leave_one_run_that_loads(toy_csv, tmp_path):
    out = tmp_path / "run"
    rnnlab = str(Path(sys.executable).parent / "rnnlab")
    cmd = lambda units: [rnnlab, "train", str(toy_csv), "--out", str(out), "--embeddings", "none", "--epochs", "1",  # noqa: E731
                         "--units", units, "--maxlen", "16", "--quiet"]
    procs = [subprocess.Popen(cmd(u), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for u in ("8", "12")]
    results = [(p.wait(timeout=600), p.stderr.read().decode()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is being trained by process" in refused or "already holds a run" in refused, refused
    winner = next(u for u, (code, _) in zip(("8", "12"), results, strict=True) if code == 0)
    run = load_run(out)   # the config and the model of one and the same training
    assert run.model.config.units == int(winner) and json.loads((out / METRICS).read_text())["best_epoch"] == 1


# -- resume only what the run was, on its data --------------------------

@pytest.fixture(scope="module")
def finished(toy_csv, tmp_path_factory) -> Path:
    """A finished one-epoch run on toy.csv, its state kept (--keep-state)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    fit(Config(**{**SMALL, "epochs": 1}), rdata.load(toy_csv), out, progress=False, keep_state=True)
    return out


def test_a_finished_run_says_so_and_is_left_alone(finished, toy_csv):
    assert (finished / STATE).exists() and (finished / METRICS).exists()   # --keep-state kept it
    before = (finished / MODEL).read_bytes()
    with pytest.raises(RunFinishedError, match="is finished"):
        fit(Config(**{**SMALL, "units": 32, "cell": "lstm"}), rdata.load(toy_csv), finished, resume=True)
    result = invoke("train", toy_csv, "--out", finished, "--resume", "--cell", "lstm", "--quiet")
    assert result.exit_code == 0 and "is finished (best epoch 1): nothing to resume" in result.output
    assert (finished / MODEL).read_bytes() == before


def unfinished(finished: Path, tmp_path: Path, state: bool = True) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / METRICS).unlink()
    if not state:
        (out / STATE).unlink()
    return out


def test_a_resume_on_other_labels_is_refused(finished, tmp_path):
    out = unfinished(finished, tmp_path)
    ds = toy_dataset()
    three = Dataset("toy", ("neg", "pos", "meh"), ds.splits, "other.csv")
    with pytest.raises(checkpoint.RunError, match=r"trained on the labels neg, pos; other\.csv has neg, pos, meh"):
        fit(Config(**SMALL), three, out, resume=True, progress=False)


def test_a_resume_on_other_texts_is_refused(finished, tmp_path, toy_csv):
    out = unfinished(finished, tmp_path)
    other = toy_dataset(seed=1)
    other = Dataset(other.task, other.labels, other.splits, "other.csv")
    with pytest.raises(checkpoint.RunError, match=r"other\.csv is not the data .* was trained on"):
        fit(Config(**SMALL), other, out, resume=True, progress=False)
    result = invoke("train", toy_csv, "--out", tmp_path / "nothing", "--resume", "--quiet", "--embeddings", "none")
    one_line_error(result, "no run to resume")


def test_a_run_without_a_checkpoint_restarts_with_its_own_settings(finished, tmp_path, toy_csv):
    out = unfinished(finished, tmp_path, state=False)
    said = []
    r = fit(Config(**{**SMALL, "epochs": 1, "units": 12}), rdata.load(toy_csv), out, resume=True, progress=False,
            say=said.append)
    assert said[0] == "--resume continues with the run's own settings: units 8 (not 12)"
    assert said[1].endswith("has no checkpoint yet: training it again from the start, with its own settings")
    assert r.model.config.units == 8 and load_run(out).model.config.units == 8
    assert not (out / STATE).exists() and (out / METRICS).exists()


def test_a_run_with_no_finished_epoch_is_not_served(finished, tmp_path):
    out = unfinished(finished, tmp_path)
    (out / MODEL).unlink()
    for command in (["predict", out, "so happy"], ["inspect", out, "so happy"], ["explain", out]):
        result = invoke(*command)
        assert result.exit_code != 0 and "has not finished its first epoch" in result.output, result.output
        assert "Traceback" not in result.output


def test_a_resume_holds_out_the_rows_its_run_held_out(finished, tmp_path, toy_csv, monkeypatch):
    """toy.csv has no val split: a resume under another --seed or --val-fraction must split train as the run
    did (its own seed and fraction), or it would train on rows it validated on."""
    out = unfinished(finished, tmp_path)
    own = Config.from_dict(checkpoint.read_json(out / checkpoint.CONFIG)["config"])
    splits = []
    real_split = train_mod.split_off_val
    monkeypatch.setattr(train_mod, "split_off_val", lambda d, f, s: splits.append((f, s)) or real_split(d, f, s))
    fit(Config(**{**SMALL, "seed": own.seed + 3, "val_fraction": 0.3}), rdata.load(toy_csv), out, resume=True,
        progress=False, say=lambda line: None)
    assert splits == [(own.val_fraction, own.seed)]
