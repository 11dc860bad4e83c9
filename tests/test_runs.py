"""Run folders on disk: every cut, malformed or damaged file is refused in one line naming it, every array's
checksum is checked, files are written atomically (folder fsynced, mode from the umask), and the Python API
(`rnnlab.load_run`) reads a run as the command line does."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from typer.testing import CliRunner

import rnnlab
from rnnlab import checkpoint
from rnnlab import data as rdata
from rnnlab.checkpoint import CONFIG, METRICS, MODEL, STATE, load_arrays, load_run, save_arrays
from rnnlab.cli import app
from rnnlab.train import Config, fit

sys.path.insert(0, str(Path(__file__).parent))
from test_faults import toy_csv  # noqa: F401  (the fixture)
from test_train import SMALL

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(toy_csv, tmp_path_factory) -> Path:  # noqa: F811
    """A finished one-epoch run on toy.csv, state kept."""
    out = tmp_path_factory.mktemp("runs") / "run"
    fit(Config(**{**SMALL, "epochs": 1}), rdata.load(toy_csv), out, progress=False, keep_state=True)
    return out


# -- corruptions ------------------------------------------------------------------------------------------

def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _rewrite_header(path: Path, change: Callable[[dict], None]) -> None:
    header, data = _header(path)
    change(header)
    h = json.dumps(header).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + data)


def _cut(name: str, size: Callable[[int], int]):
    def apply(run: Path):
        p = run / name
        p.write_bytes(p.read_bytes()[: size(p.stat().st_size)])
    return apply


def _arrays(change: Callable[[dict], None], metadata: bool = True):
    def apply(run: Path):
        arrays, meta = load_arrays(run / MODEL)
        change(arrays)
        save_arrays(run / MODEL, arrays, meta if metadata else None)
    return apply


def _flip_data(run: Path):
    p = run / MODEL
    header, data = _header(p)
    start, end = header["[0].E"]["data_offsets"]
    raw = bytearray(p.read_bytes())
    middle = len(raw) - len(data) + (start + end) // 2
    raw[middle : middle + 4] = bytes(255 - b for b in raw[middle : middle + 4])
    p.write_bytes(bytes(raw))


def _config(change: Callable[[dict], None]):
    def apply(run: Path):
        info = json.loads((run / CONFIG).read_text())
        change(info)
        (run / CONFIG).write_text(json.dumps(info))
    return apply


def _set(d: dict, key: str, value) -> None:
    d[key] = value


def _nan(arrays: dict) -> None:
    arrays["[0].E"][2, 0] = np.nan


CORRUPTIONS = {
    "model cut in half": (_cut(MODEL, lambda n: n // 2), [MODEL, "cut short"]),
    "model cut to 100 bytes": (_cut(MODEL, lambda n: 100), [MODEL, "cut short"]),
    "model cut to 4 bytes": (_cut(MODEL, lambda n: 4), [MODEL, "cut short (4 bytes)"]),
    "model empty": (_cut(MODEL, lambda n: 0), [MODEL, "cut short (0 bytes)"]),
    "model with a huge offset": (
        lambda r: _rewrite_header(r / MODEL, lambda h: _set(h["[0].E"], "data_offsets", [0, 10**15])),
        [MODEL, "'[0].E' lies at bytes 0..1000000000000000"]),
    "model with a huge shape": (
        lambda r: _rewrite_header(r / MODEL, lambda h: _set(h["[0].E"], "shape", [10**9, 10**9])),
        [MODEL, "'[0].E' of shape (1000000000, 1000000000) needs"]),
    "model with an unknown dtype": (
        lambda r: _rewrite_header(r / MODEL, lambda h: _set(h["[0].E"], "dtype", "X9")),
        [MODEL, "unknown dtype 'X9'"]),
    "model header not JSON": (
        lambda r: (r / MODEL).write_bytes((5).to_bytes(8, "little") + b"{oops" + b"\0" * 64),
        [MODEL, "header is not valid JSON"]),
    "model in float64": (_arrays(lambda a: _set(a, "[0].E", a["[0].E"].astype(np.float64))),
                         [MODEL, "'[0].E' has dtype float64, the model's is float32"]),
    "model with random bytes in a weight": (_flip_data, [MODEL, "'[0].E' does not match its SHA-256"]),
    "model with a NaN weight": (_arrays(_nan), [MODEL, "'[0].E' holds NaN or inf"]),
    "model with an array too many": (_arrays(lambda a: _set(a, "[0].extra", np.zeros(3, np.float32))),
                                     [MODEL, "holds arrays the config does not have: '[0].extra'"]),
    "model without an array": (_arrays(lambda a: a.pop("[0].E")), [MODEL, "no array '[0].E'"]),
    "model missing": (lambda r: (r / MODEL).unlink(), [MODEL, "has not finished its first epoch"]),
    "config not JSON": (lambda r: (r / CONFIG).write_text('{"config": {}\n  oops}'),
                        [CONFIG + ":2:", "not valid JSON"]),
    "config not UTF-8": (lambda r: (r / CONFIG).write_bytes(b'{"a": "\xff"}'), [CONFIG, "not valid UTF-8"]),
    "config a list": (lambda r: (r / CONFIG).write_text("[]"), [CONFIG, "expected a JSON object"]),
    "config with a label more": (_config(lambda i: i["labels"].append("meh")),
                                 [CONFIG, "3 labels but the model has 2 classes"]),
    "config with a label less": (_config(lambda i: i["labels"].pop()), [CONFIG, "1 labels but the model has 2"]),
    "config with an unknown model key": (_config(lambda i: _set(i["model"], "colour", "red")),
                                         [CONFIG, "unknown key(s) in 'model': colour"]),
    "config without a vocabulary": (_config(lambda i: i.pop("vocab")), [CONFIG, "no 'vocab' entry"]),
    "config with a vocabulary too short": (_config(lambda i: i["vocab"].pop()), [CONFIG, "a vocabulary of"]),
    "config with units 0": (_config(lambda i: _set(i["model"], "units", 0)), [CONFIG, "'units' as a whole number"]),
    "config with an unknown cell": (_config(lambda i: _set(i["model"], "cell", "tree")),
                                    [CONFIG, "cannot be built", "tree"]),
    "config with units changed": (_config(lambda i: _set(i["model"], "units", 9)), [MODEL, "has shape"]),
}


def damaged(run: Path, tmp_path: Path, corruption: str) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    CORRUPTIONS[corruption][0](copy)
    return copy


def squeezed(text: str) -> str:
    """text without whitespace: the console may wrap a long line anywhere, even inside a path."""
    return "".join(text.split())


def one_line(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit | None)
    for w in words:
        assert squeezed(w) in squeezed(result.output), (w, result.output)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_predict_refuses_a_damaged_run_in_one_line(run, tmp_path, corruption):
    copy = damaged(run, tmp_path, corruption)
    one_line(invoke("predict", copy, "so happy", "--json"), *CORRUPTIONS[corruption][1])
    with pytest.raises((ValueError, FileNotFoundError)):
        load_run(copy)


@pytest.mark.parametrize("corruption", ["model cut in half", "config not JSON", "model with random bytes in a weight"])
def test_evaluate_inspect_and_explain_name_the_damaged_file(run, tmp_path, toy_csv, corruption):  # noqa: F811
    copy = damaged(run, tmp_path, corruption)
    words = CORRUPTIONS[corruption][1]
    one_line(invoke("evaluate", copy, toy_csv), *words)
    for command in (["inspect", copy, "so happy"], ["explain", copy]):
        result = invoke(*command)
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert all(squeezed(w) in squeezed(result.output) for w in words), result.output


STATE_CORRUPTIONS = {
    "cut short": (lambda p: p.write_bytes(p.read_bytes()[:1000]), "cut short"),
    "no metadata": (lambda p: save_arrays(p, load_arrays(p)[0]), "no training position in its metadata"),
    "random bytes": (lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\x01" * 8), "does not match its SHA-256"),
}


@pytest.mark.parametrize("corruption", list(STATE_CORRUPTIONS))
def test_resume_refuses_a_damaged_state_in_one_line(run, tmp_path, toy_csv, corruption):  # noqa: F811
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / METRICS).unlink()   # an unfinished run, with its state
    change, words = STATE_CORRUPTIONS[corruption]
    change(copy / STATE)
    one_line(invoke("train", toy_csv, "--out", copy, "--resume", "--quiet"), STATE, words)


# -- what a good run holds ----------------------------------------------------------------------------------

def test_every_array_is_stored_with_its_sha256(run):
    for name in (MODEL, STATE):
        header, _ = _header(run / name)
        sums = json.loads(header["__metadata__"]["sha256"])
        arrays = st_load((run / name).read_bytes())
        assert set(sums) == set(arrays) and len(arrays) > 5
        for key, a in arrays.items():
            assert sums[key] == hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_predict_json_is_strict_json(run):
    result = invoke("predict", run, "so happy", "", "awful day", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) for line in
             result.output.splitlines()]
    assert [line["label"] is None for line in lines] == [False, True, False]


def test_the_python_api_reads_a_run(run):
    assert "load_run" in rnnlab.__all__
    r = rnnlab.load_run(run)
    assert isinstance(r, rnnlab.Run) and rnnlab.runs.kind(run) == "classifier"
    label = r.predict("so happy today")
    assert isinstance(label, str) and label in r.labels          # one label, not one per character
    assert r.predict(["so happy today", "awful"]) == [label, r.predict("awful")]
    p = r.predict_proba("so happy today")
    assert p.shape == (2,)
    np.testing.assert_array_equal(p, r.predict_proba(["so happy today"])[0])
    tokens, a, y = r.trace("so happy today")
    assert len(tokens) == 3 and a.shape[0] == y.shape[0] == 3
    np.testing.assert_allclose(y[-1], p, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError):   # one text a call (under the test suite's type checks, theirs says so)
        r.trace(["so", "happy"])


def test_a_run_is_a_classifier_by_its_kind_or_by_having_none(run, tmp_path):
    from rnnlab import inference, train

    assert checkpoint.Run is inference.Run and checkpoint.predict_proba is inference.predict_proba
    assert train.evaluate is inference.evaluate
    assert json.loads((run / CONFIG).read_text())["kind"] == "classifier"
    old = tmp_path / "old"
    shutil.copytree(run, old)
    info = json.loads((old / CONFIG).read_text())
    del info["kind"]                                 # a run written before config.json had a kind
    (old / CONFIG).write_text(json.dumps(info))
    text = ["so happy today", "awful"]
    np.testing.assert_array_equal(load_run(old).predict_proba(text), load_run(run).predict_proba(text))
    (old / CONFIG).write_text(json.dumps({**info, "kind": "sequence"}))
    with pytest.raises(checkpoint.RunError, match=r"config\.json: 'kind' is 'sequence': not a classifier's run"):
        load_run(old)


def test_bucketed_and_one_shape_probabilities_agree(run):
    """inference.predict_proba in length buckets and in one padded shape (training's evaluation) give the
    same probabilities: padding past a text's length changes nothing."""
    from rnnlab import inference

    r = load_run(run)
    ids, lengths = r.encode(["so happy today", "awful", "", "what a day it was, really " * 4])
    bucketed = inference.predict_proba(r.members, ids, lengths, batch_size=3)
    one_shape = inference.predict_proba(r.members, ids, lengths, batch_size=3, buckets=False)
    assert bucketed.shape == (4, len(r.labels))
    np.testing.assert_allclose(bucketed, one_shape, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bucketed.sum(axis=1), 1.0, rtol=1e-5)


# -- how files are written ----------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        checkpoint.write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == mode


def test_a_write_is_renamed_then_its_folder_fsynced(tmp_path, monkeypatch):
    synced, fsync = [], os.fsync

    def record(fd):
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino, (tmp_path / "x.json").exists()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    checkpoint.write_json(tmp_path / "x.json", {"a": 1})
    assert synced[0][:1] == (False,) and not synced[0][2]          # the temporary file, before the rename
    assert synced[-1] == (True, tmp_path.stat().st_ino, True)     # then the folder, after it


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    checkpoint.write_json(tmp_path / "x.json", {"a": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(checkpoint.RunError, match=r"x\.json: cannot write it \(No space left on device\)"):
        checkpoint.write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_orphans_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    for name in (".state.safetensors.abc123.tmp", ".model.safetensors.x.tmp", ".notes.txt.y.tmp", "mine.tmp"):
        (tmp_path / name).write_text("x")
    removed = checkpoint.remove_orphans(tmp_path)
    assert sorted(p.name for p in removed) == [".model.safetensors.x.tmp", ".state.safetensors.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt.y.tmp", "mine.tmp"]


def test_a_write_to_a_device_writes_through_it_and_leaves_it_a_device(tmp_path):
    """`--svg /dev/null` discards the picture: the write goes through the device, never renames over it."""
    checkpoint.atomic_write("/dev/null", b"<svg/>")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    checkpoint.atomic_write(fifo, b"through")
    assert os.read(reader, 100) == b"through" and stat.S_ISFIFO(os.stat(fifo).st_mode)
    os.close(reader)


def test_the_background_writer_writes_what_it_was_given_in_order_and_raises_a_failed_write(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    with checkpoint.Writer() as writer:
        writer.save_arrays(tmp_path / "x.safetensors", {"a": a}, {"n": 1})
        a += 100  # the caller's buffer changes (as a donated step's does) once the call returns
        writer.save_arrays(tmp_path / "x.safetensors", {"a": a}, {"n": 2})  # after the first, never before
    arrays, meta = load_arrays(tmp_path / "x.safetensors")
    assert meta == {"n": 2} and np.array_equal(arrays["a"], a)
    history = [{"epoch": 1}]
    with checkpoint.Writer() as writer:
        writer.save_arrays(tmp_path / "x.safetensors", {"a": a - 100}, {"n": 3, "history": history})
        history.append({"epoch": 2})  # the training goes on while the file is written: not in this file
    arrays, meta = load_arrays(tmp_path / "x.safetensors")
    assert np.array_equal(arrays["a"], np.arange(6).reshape(2, 3)) and meta["history"] == [{"epoch": 1}]
    (tmp_path / "file").write_text("a file, not a folder")
    writer = checkpoint.Writer()
    writer.save_arrays(tmp_path / "file" / "y.safetensors", {"a": a})  # fails in the background
    with pytest.raises(checkpoint.RunError, match=r"y\.safetensors: cannot write it"):
        writer.save_arrays(tmp_path / "z.safetensors", {"a": a})        # told at the next call
    writer.close()
    with pytest.raises(checkpoint.RunError, match="cannot write it"), checkpoint.Writer() as writer:
        writer.save_arrays(tmp_path / "file" / "y.safetensors", {"a": a})  # or when it is closed
