"""`rnnlab train / evaluate / predict` end to end on ../shared/data/tweeteval/emotion, and bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnlab.checkpoint import METRICS, STATE, load_arrays, load_run
from rnnlab.cli import app

RNNLAB = str(Path(sys.executable).parent / "rnnlab")
SMALL = ["--units", "16", "--unidirectional", "--maxlen", "32", "--epochs", "1", "--quiet"]
runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def emotion_run(tweeteval_dir, tmp_path_factory) -> Path:
    """A run on emotion whose training subprocess was killed (SIGKILL) mid-epoch, then resumed."""
    out = tmp_path_factory.mktemp("cli") / "emotion"
    cmd = [RNNLAB, "train", str(tweeteval_dir / "emotion"), "--out", str(out), *SMALL, "--checkpoint-every", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, meta = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        try:
            meta = load_arrays(out / STATE)[1]
        except (FileNotFoundError, ValueError, OSError):
            meta = None
        if meta and meta["step_in_epoch"] >= 20:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert meta and meta["epoch"] == 0 and meta["step_in_epoch"] >= 20, proc.stderr.read().decode()[-2000:]
    assert not (out / METRICS).exists()
    killed_at = load_arrays(out / STATE)[1]["global_step"]
    result = invoke("train", tweeteval_dir / "emotion", "--out", out, *SMALL, "--resume", "--keep-state")
    assert result.exit_code == 0, result.output
    final = load_arrays(out / STATE)[1]
    assert final["epoch"] == 1 and final["global_step"] > killed_at
    return out


def test_train_writes_official_scores(emotion_run):
    m = json.loads((emotion_run / METRICS).read_text())
    assert m["metric"] == "macro_f1" and 0.2 < m["test"]["macro_f1"] <= 1 and "macro_f1" in m["val"]
    assert len(m["history"]) == 1  # one epoch in all, across the kill and the resume


def test_predict_matches_the_reloaded_model(emotion_run):
    texts = ["I am so happy today #blessed", "this makes me furious", "feeling down and alone"]
    result = invoke("predict", emotion_run, *texts, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    proba = load_run(emotion_run).predict_proba(texts)
    for row, p in zip(rows, proba, strict=True):
        assert list(row["probabilities"]) == ["anger", "joy", "optimism", "sadness"]
        np.testing.assert_allclose(list(row["probabilities"].values()), p, atol=1e-6)
        assert row["label"] == ["anger", "joy", "optimism", "sadness"][int(p.argmax())]
    stdin = invoke("predict", emotion_run, "--json", input="\n".join(texts) + "\n")
    assert stdin.output == result.output, (stdin.exit_code, stdin.output, stdin.exception)
    plain = invoke("predict", emotion_run, texts[0])
    assert plain.exit_code == 0 and "joy" in plain.output


def test_evaluate_agrees_with_training(emotion_run, tweeteval_dir):
    result = invoke("evaluate", emotion_run, tweeteval_dir / "emotion", "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    m = json.loads((emotion_run / METRICS).read_text())
    assert report["macro_f1"] == pytest.approx(m["test"]["macro_f1"])
    assert np.array(report["confusion"]).sum() == 1421
    table = invoke("evaluate", emotion_run, tweeteval_dir / "emotion", "--split", "val")
    assert table.exit_code == 0 and "confusion matrix" in table.output and "optimism" in table.output


def test_help_shows_examples():
    for command in ("train", "evaluate", "predict"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Examples" in result.output


def write_task(folder: Path) -> Path:
    folder.mkdir()
    (folder / "mapping.txt").write_text("0\tneg\n1\tpos\n")
    (folder / "train_text.txt").write_text("good\nbad\n")
    (folder / "train_labels.txt").write_text("1\n0\n")
    return folder


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: (f / "train_labels.txt").write_text("1\n0\n1\n"),
     r"train_labels.txt:3: 3 labels but train_text.txt has 2 lines"),
    (lambda f: (f / "train_labels.txt").write_text("1\n2\n"), r"train_labels.txt:2: unknown label '2'"),
    (lambda f: (f / "train_text.txt").write_text(""), r"train_text.txt: the file is empty"),
    (lambda f: (f / "train_text.txt").write_bytes(b"good\nb\xffd\n"), r"train_text.txt:2: not valid UTF-8"),
])
def test_bad_input_is_one_clear_line(tmp_path, damage, message):
    folder = write_task(tmp_path / "task")
    damage(folder)
    result = invoke("train", folder, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert message in " ".join(result.output.split()), result.output


def test_existing_run_needs_resume(emotion_run, tweeteval_dir):
    result = invoke("train", tweeteval_dir / "emotion", "--out", emotion_run, "--quiet")
    assert result.exit_code == 2 and "--resume" in result.output


def test_predict_without_a_run(tmp_path):
    result = invoke("predict", tmp_path / "nothing", "hello")
    assert result.exit_code == 2 and "config.json: no such file" in " ".join(result.output.split())


def test_an_interrupted_training_says_what_it_keeps_and_how_to_go_on(tmp_path, monkeypatch):
    import rnnlab.train

    folder = write_task(tmp_path / "task")
    (folder / "val_text.txt").write_text("fine\nawful\n")
    (folder / "val_labels.txt").write_text("1\n0\n")

    def interrupted(config, dataset, out, **kw):
        if kw.get("resume") is False and "kept" in str(out):
            (Path(out) / STATE).parent.mkdir(parents=True, exist_ok=True)
            (Path(out) / STATE).write_bytes(b"a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(rnnlab.train, "fit", interrupted)  # the command imports it when it runs
    result = invoke("train", folder, "--out", tmp_path / "kept", "--quiet")
    said = " ".join(result.output.split())
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert f"interrupted: {tmp_path / 'kept'} keeps its last checkpoint" in said and "--resume" in said
    result = invoke("train", folder, "--out", tmp_path / "none", "--quiet")
    assert result.exit_code == 130 and "nothing to resume" in " ".join(result.output.split())


def test_the_command_ends_with_its_code_and_every_byte_of_its_output(tmp_path):
    """The process skips the interpreter's teardown (`rnnlab.cli.main`): what it printed still arrives
    whole through a pipe, and its exit code is the command's."""
    shown = subprocess.run([RNNLAB, "train", "--help"], capture_output=True, text=True, timeout=300,
                           env={"COLUMNS": "80", "PATH": ""})
    assert shown.returncode == 0, shown.stderr
    assert invoke("train", "--help").output == shown.stdout   # the same text as in process, to its last line
    missing = tmp_path / "no-run"
    refused = subprocess.run([RNNLAB, "evaluate", str(missing), str(tmp_path)], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr == invoke("evaluate", missing, tmp_path).output
