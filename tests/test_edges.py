"""Bad input driven through the command line: each case is the files it writes, the command, the exit status
and the words its one-line message must hold (never a traceback). Then the edges of good input: a single file's
held-out rows, blank lines to predict, help that shows every default."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnlab.cli import app

runner = CliRunner()
FAST = ["--embeddings", "none", "--units", "4", "--unidirectional", "--maxlen", "8", "--epochs", "1", "--quiet"]


def invoke(*args, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def said(result) -> str:
    """The output as one line of words (Rich wraps and boxes long messages)."""
    return " ".join(result.output.replace("│", " ").split())


def rows(*pairs) -> str:
    return "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in pairs)


def tiny_csv(path: Path, n: int = 40) -> Path:
    words = {"pos": "good great happy love", "neg": "bad awful sad hate"}
    path.write_text("text,label\n" + "".join(f"{words[y]} {i},{y}\n" for i in range(n)
                                             for y in (("pos", "neg")[i % 2],)))
    return path


def folder(path: Path, texts: str, labels: str, mapping: str | None = "0\tneg\n1\tpos\n") -> Path:
    path.mkdir()
    (path / "train_text.txt").write_text(texts)
    (path / "train_labels.txt").write_text(labels)
    if mapping is not None:
        (path / "mapping.txt").write_text(mapping)
    return path


# (name, make(tmp) -> data, extra options, exit code, words the message holds)
BAD_DATA = [
    ("jsonl label null", lambda d: _w(d / "t.jsonl", rows(("a", 0), ("b", 1)) + '{"text": "c", "label": null}\n'),
     [], 2, ["t.jsonl:3:", "the label must be text or a number; got null"]),
    ("jsonl label a list", lambda d: _w(d / "t.jsonl", rows(("a", 0), ("b", 1), ("c", [1]))),
     [], 2, ["t.jsonl:3:", "got [1]"]),
    ("jsonl label 1e400", lambda d: _w(d / "t.jsonl", rows(("a", 0), ("b", 1)) + '{"text": "c", "label": 1e400}\n'),
     [], 2, ["t.jsonl:3:", "not a finite number"]),
    ("csv empty label", lambda d: _w(d / "t.csv", "text,label\na,x\nb,\nc,y\n"), [], 2, ["t.csv:3:", "an empty label"]),
    ("csv quote never closed", lambda d: _w(d / "t.csv", "text,label\n" + "a,x\nb,y\n" * 20 + '"c,x\n' + "d,y\n" * 9),
     [], 2, ["t.csv:42:", "a quoted field opens on this line and is never closed"]),
    ("folder with one label in train", lambda d: folder(d / "f", "a\nb\n", "1\n1\n"),
     [], 2, ["train_labels.txt", "every training text has the label 'pos'"]),
    ("one text each, nothing to hold out", lambda d: _w(d / "t.csv", "text,label\na,x\nb,y\n"),
     [], 2, ["too few to hold out a validation split"]),
    ("val fraction 0", lambda d: tiny_csv(d / "t.csv"), ["--val-fraction", "0"], 2,
     ["--val-fraction 0.0", "in (0, 1)"]),
    ("val fraction 1.5", lambda d: tiny_csv(d / "t.csv"), ["--val-fraction", "1.5"], 2,
     ["--val-fraction 1.5", "in (0, 1)"]),
]


def _w(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("make", "options", "code", "words"), [c[1:] for c in BAD_DATA],
                         ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_one_clear_line(tmp_path, make, options, code, words):
    result = invoke("train", make(tmp_path), "--out", tmp_path / "run", *FAST, *options)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in said(result), result.output
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything was written


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run, data): a run trained one epoch on a single CSV file, which holds no val or test split."""
    d = tmp_path_factory.mktemp("edges")
    data = tiny_csv(d / "t.csv")
    result = invoke("train", data, "--out", d / "run", *FAST, "--val-fraction", "0.25", "--json")
    assert result.exit_code == 0, result.output
    return d / "run", data


def test_a_single_file_says_what_it_held_out_and_evaluate_scores_those_rows(csv_run):
    run, data = csv_run
    trained = json.loads(runner.invoke(app, ["evaluate", str(run), str(data), "--json"]).stdout)
    assert trained["split"] == "val" and trained["n"] == 10  # 25 % of each label's 20 texts
    metrics = json.loads((run / "metrics.json").read_text())
    assert trained["macro_f1"] == pytest.approx(metrics["val"]["macro_f1"])
    assert trained["confusion"] == metrics["val"]["confusion"]
    missing = invoke("evaluate", run, data, "--split", "test")
    assert missing.exit_code == 2 and "no 'test' split" in said(missing) and "--split val" in said(missing)


def test_train_json_is_the_result(csv_run, tmp_path):
    data = csv_run[1]
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "r"), *FAST, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["run"] == str(tmp_path / "r") and out["metric"] == "macro_f1" and out["test"] is None
    assert out["val"]["n"] == 4 and "held out" in result.stderr  # 10 % of each label's 20 texts, said


def test_predict_keeps_one_output_line_per_input_line(csv_run):
    run, _ = csv_run
    lines = ["good great", "", "bad awful", "   ", "[bold]sad[/bold] " + "x " * 100]
    plain = invoke("predict", run, input="\n".join(lines) + "\n")
    assert plain.exit_code == 0, plain.output
    out = plain.output.split("\n")[:-1]
    assert len(out) == len(lines) and out[1] == out[3] == "" and lines[4].strip() in out[4]  # one line, unwrapped
    as_json = [json.loads(x) for x in invoke("predict", run, "--json", input="\n".join(lines)).output.splitlines()]
    assert [r["label"] is None for r in as_json] == [False, True, False, True, False]
    assert [r["text"] for r in as_json] == lines
    empty = invoke("predict", run, input="\n\n")
    assert empty.exit_code == 2 and "no text to classify" in said(empty)


def test_score_table_names_each_metric_once(csv_run, tmp_path):
    run, data = csv_run
    table = invoke("evaluate", run, data, "--split", "val")
    header = next(line for line in table.output.splitlines() if "split" in line)
    assert re.findall(r"\w+", header) == ["split", "macro_f1", "accuracy"]


def test_version_and_help_show_every_default():
    from importlib.metadata import version

    assert invoke("--version").output.strip() == f"rnnlab {version('rnnlab')}"
    env = {**os.environ, "COLUMNS": "200"}
    helptext = runner.invoke(app, ["train", "--help"], env=env).output
    for option, default in (("--cell", "gru"), ("--units", "64"), ("--epochs", "20"), ("--lr", "0.002"),
                            ("--max-seconds", "no limit"), ("--quiet", "off"), ("--json", "off")):
        line = next(x for x in helptext.splitlines() if f" {option} " in x)
        assert f"[default: {default}" in line, line
    tune_help = runner.invoke(app, ["tune", "--help"], env=env).output
    assert "[default: not swept: train's default]" in next(x for x in tune_help.splitlines() if " --layers " in x)
    for command in ("train", "evaluate", "predict", "explain", "inspect", "tune", "demo"):
        text = runner.invoke(app, [command, "--help"], env=env).output
        assert "<bool>" not in text and "the seed's case" not in text, command
        narrow = runner.invoke(app, [command, "--help"], env={**os.environ, "COLUMNS": "80"}).output
        assert "…" not in narrow and max(map(len, narrow.splitlines())) <= 80, command  # folded, never cut


# -- set-up: what `make demo` installs, where .ci/postgres finds PostgreSQL -------------------------------

REPO = Path(__file__).resolve().parents[1]


def make_n(target: str, tmp_path: Path) -> str:
    """The commands `make TARGET` would run on a fresh clone (nothing installed yet), without running them."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True).stdout


def test_make_demo_installs_the_runtime_alone_and_test_its_extra_torch_first(tmp_path):
    demo = make_n("demo", tmp_path)
    assert "torch" not in demo and "keras" not in demo.lower() and "[test" not in demo and "[bench" not in demo
    assert "pip install -q --no-build-isolation -e ." in demo and "rnnlab demo" in demo
    for target, extra in (("test", "test"), ("bench", "bench")):
        commands = make_n(target, tmp_path).splitlines()
        torch = next(i for i, c in enumerate(commands) if "pip install -q torch==2.13.0" in c)
        extra_at = next(i for i, c in enumerate(commands) if f"-r .venv/requirements-{extra}.txt" in c)
        assert torch < extra_at and sum("-e ." in c for c in commands) == 1  # torch first; one build of rnnlab


def test_ci_postgres_finds_postgresql_on_the_path(tmp_path):
    import subprocess

    bin_dir = tmp_path / "pg" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "postgres"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    script = ("eval \"$(sed -n '/^_rnnlab_pg_bindir()/,/^}/p' .ci/postgres)\"; _rnnlab_pg_bindir")
    found = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == (str(debian[-1].parent) if debian else str(bin_dir))


# -- real data formats: descriptions, no mapping.txt, a task's name, a split that lacks labels -----------


@pytest.fixture(scope="module")
def irony_like(tmp_path_factory) -> tuple[Path, Path, object]:
    """(run, data, the train command's result): a folder named `irony` whose labels are not irony's, with a
    mapping.txt of three columns (emoji's form), and a val split holding one of its two labels."""
    d = tmp_path_factory.mktemp("irony-like")
    data = d / "irony"
    data.mkdir()
    (data / "mapping.txt").write_text("0\t❤\t_red_heart_\t\n1\t😂\t_face_with_tears_of_joy_\t\n")
    words = ("love heart dear sweet", "lol haha funny joke")
    (data / "train_text.txt").write_text("".join(f"{words[i % 2]} {i}\n" for i in range(40)))
    (data / "train_labels.txt").write_text("".join(f"{i % 2}\n" for i in range(40)))
    (data / "val_text.txt").write_text("love you\nsweet heart\n")
    (data / "val_labels.txt").write_text("0\n0\n")
    result = runner.invoke(app, ["train", str(data), "--out", str(d / "run"), *FAST])
    return d / "run", data, result


def test_a_folder_named_like_a_task_trains_scored_by_macro_f1_and_warns_of_missing_labels(irony_like):
    run, _, result = irony_like
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["metric"] == "macro_f1"
    said_ = " ".join(result.stderr.split())
    assert "named like a TweetEval task" in said_ and "scored by macro_f1" in said_
    assert "warning: val has no text labelled 😂" in said_


def test_evaluate_shows_each_label_s_description(irony_like):
    run, data, _ = irony_like
    table = runner.invoke(app, ["evaluate", str(run), str(data)], env={**os.environ, "COLUMNS": "120"})
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "❤" in line and "_red_heart_" in line)
    assert "description" in table.stdout and row
    assert "warning: val has no text labelled 😂" in " ".join(table.stderr.split())
    report = json.loads(runner.invoke(app, ["evaluate", str(run), str(data), "--json"]).stdout)
    assert report["split"] == "val" and report["descriptions"] == ["_red_heart_", "_face_with_tears_of_joy_"]


def test_a_folder_without_mapping_trains_and_says_how_it_named_the_labels(tmp_path):
    data = folder(tmp_path / "umsab", "".join(f"w{i % 3} x\n" for i in range(30)),
                  "".join(f"{(i % 3) * 5}\n" for i in range(30)), mapping=None)
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    assert "no mapping.txt, so the labels are named by their own values: 0, 5, 10" in " ".join(result.stderr.split())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["labels"] == ["0", "5", "10"]


def test_evaluate_fits_80_columns_and_says_what_it_leaves_out(tmp_path):
    labels = [f"class_number_{i}" for i in range(12)]
    data = tmp_path / "many.csv"
    data.write_text("text,label,split\n" + "".join(f"word{i} w{j},{y},{('train', 'train', 'val')[j % 3]}\n"
                                                  for i, y in enumerate(labels) for j in range(6)))
    assert runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *FAST]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), str(data)], env={**os.environ, "COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.stdout
    assert all(any(name in line for line in lines) for name in labels)      # per class: every label, whole
    said_ = " ".join(result.stdout.split())
    assert "confusion matrix: 12 labels need" in said_ and "--json gives it whole" in said_


def test_demo_json_is_the_numbers_alone(tmp_path):
    result = runner.invoke(app, ["demo", "--only", "xor", "--epochs", "1", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["tasks"]) == {"xor"} and set(out["tasks"]["xor"]["error_by_position"]) == {
        "first bit", "second bit", "XOR bit"}
    assert all(Path(f).is_file() for f in out["tasks"]["xor"]["files"]) and "elman:xor" in result.stderr


def test_predict_on_a_terminal_cuts_a_long_text_to_its_width_and_marks_the_cut(csv_run, monkeypatch):
    import io

    from rich.console import Console

    from rnnlab.cli import train as cli_train

    screen = io.StringIO()
    monkeypatch.setattr(cli_train, "out_console", Console(file=screen, force_terminal=True, width=60,
                                                          color_system=None))
    text = "good great " + "and on " * 30 + "the end"
    assert invoke("predict", csv_run[0], text, "bad").exit_code == 0
    lines = screen.getvalue().splitlines()
    assert len(lines) == 2 and all(len(line) <= 60 for line in lines) and lines[0].endswith("…")
    assert "the end" not in lines[0] and lines[1].endswith("bad")
