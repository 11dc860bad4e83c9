"""`rnnlab tune`: the search space, the shared trial queue, results on disk, resuming, many workers."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from rnnlab import tune
from rnnlab.tune import report as tune_report
from rnnlab.tune import study as sweep

HERE = Path(__file__).resolve().parent
SPACE = {"units": "1,2,4,8,16,32", "cell": "gru,lstm"}


class FakeTask:
    """A stand-in for training: the score peaks at p = 8 units, GRU a little ahead; `sleep` s a trial."""

    metric = "macro_f1"

    def __init__(self, sleep: float = 0.0, epochs: int = 2, fail_units: int | None = None, luck: dict | None = None):
        self.sleep, self.epochs, self.fail_units, self.luck = sleep, epochs, fail_units, luck or {}

    def score(self, config: dict, epoch: int) -> float:
        p = config["units"]
        return (0.6 - 0.01 * (math.log2(p) - 3) ** 2 + 0.02 * (config.get("cell") == "gru") - 0.01 / epoch
                + self.luck.get((p, config.get("seed")), 0.0))

    def validate(self, config: dict, log: tune.TrialLog) -> float:
        if config["units"] == self.fail_units:
            raise RuntimeError("out of memory (on purpose)")
        p = config["units"]
        log.note(params=3 * (p * p + 4 * p + p), rnn_params=3 * p * p)
        for epoch in range(1, self.epochs + 1):
            time.sleep(self.sleep / self.epochs)
            log.report(epoch, self.score(config, epoch))
        log.note(epochs=self.epochs)
        return self.score(config, self.epochs)

    def test(self, config: dict, log: tune.TrialLog) -> dict:
        return {"val": self.validate(config, log), "test": 0.5}


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def grid_points(rows: list[dict]) -> list[tuple]:
    return sorted((r["units"], r["cell"]) for r in rows)


# ----------------------------------------------------------------------------------------------------------
# the space


def test_space_from_command_line_lists_and_ranges():
    space = tune.Space.parse(units="8,16,32", cell="GRU,lstm", lr=None)
    assert space.choices == {"units": (8, 16, 32), "cell": ("gru", "lstm")}
    assert space.is_grid and space.varied == ["units", "cell"]
    assert space.grid()[:3] == [{"units": 8, "cell": "gru"}, {"units": 8, "cell": "lstm"},
                                {"units": 16, "cell": "gru"}]
    search = tune.Space.parse(units="8", lr="1e-4..1e-2", dropout="0,0.3")
    assert not search.is_grid and search.ranges == {"lr": (1e-4, 1e-2)}
    assert search.varied == ["dropout", "lr"]
    assert tune.Space.from_json(search.to_json()) == search


@pytest.mark.parametrize(("options", "message"), [
    ({"cell": "gru"}, "needs --units"),
    ({"units": "8,x"}, "not an integer"),
    ({"units": "8,8"}, "repeats"),
    ({"units": "0,8"}, "at least 1"),
    ({"units": "8", "seed": "0,x"}, "not an integer"),
    ({"units": "8", "lr": "1e-4..1e-2", "seed": "0,1"}, "seeds repeat the configurations of a grid"),
    ({"units": "8..64"}, "takes a list"),
    ({"units": "8", "lr": "1e-2..1e-4"}, "lo < hi"),
    ({"units": "8", "heads": "2"}, "cannot sweep 'heads'"),
])
def test_space_errors_say_what_to_change(options, message):
    with pytest.raises(tune.SweepError, match=message):
        tune.Space.parse(**options)


# ----------------------------------------------------------------------------------------------------------
# one worker: table, CSV, plot; the test trial last; joining; pruning; failures


def test_a_grid_runs_each_point_once_then_tests_the_best(tmp_path):
    space = tune.Space.parse(**SPACE)
    study = tune.open_study(sqlite(tmp_path / "s.db"), "grid", space, settings={"epochs": 2})
    assert tune.progress(study) == {"waiting": 13, "running": 0, "finished": 0}
    assert tune.run_worker(study, FakeTask()) == 13
    rows, test = tune.trial_rows(study)
    assert grid_points(rows) == sorted((p["units"], p["cell"]) for p in space.grid())
    assert all(r["state"] == "complete" and r["epochs"] == 2 for r in rows)
    top = tune.best(rows, space)
    assert (top["units"], top["cell"]) == (8, "gru")
    assert test["role"] == "test" and test["trial"] == 12 and (test["units"], test["cell"]) == (8, "gru")
    assert test["test"] == 0.5 and test["val"] == pytest.approx(top["score"])

    console = Console(record=True, width=140)
    console.print(tune_report.table(rows, space, "macro_f1", title="grid"))
    text = console.export_text()
    assert "val macro_f1" in text and "parameters" in text and "★" in text
    assert len([line for line in text.splitlines() if "complete" in line]) == 12

    path = tune_report.write_csv(rows, tmp_path / "trials.csv", test)
    records = read_csv(path)
    assert len(records) == 13 and records[-1]["role"] == "test" and records[-1]["test"] == "0.5"
    assert {"trial", "units", "cell", "params", "rnn_params", "score", "epochs", "seconds"} <= set(records[0])

    pictures = tune_report.plot(rows, space, "macro_f1", [tmp_path / "u.png", tmp_path / "u.svg"], title="t")
    assert [p.name for p in pictures] == ["u.png", "u.svg"]
    assert (tmp_path / "u.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "u.svg").read_bytes()[:400]

    again = tune.open_study(sqlite(tmp_path / "s.db"), "grid", space, settings={"epochs": 2})
    assert tune.run_worker(again, FakeTask()) == 0             # finished: nothing runs twice


def test_joining_a_study_with_other_options_is_refused(tmp_path):
    space = tune.Space.parse(**SPACE)
    tune.open_study(sqlite(tmp_path / "s.db"), "one", space, settings={"epochs": 2})
    with pytest.raises(tune.SweepError, match=r"holds another sweep \(epochs: 2 in the study, 3 here"):
        tune.open_study(sqlite(tmp_path / "s.db"), "one", space, settings={"epochs": 3})
    with pytest.raises(tune.SweepError, match=r"units: 1,2,4,8,16,32 in the study, 8 here.*another --study"):
        tune.open_study(sqlite(tmp_path / "s.db"), "one", tune.Space.parse(units="8"), settings={"epochs": 2})
    assert tune.load_study(sqlite(tmp_path / "s.db"), "one").user_attrs["ready"]
    with pytest.raises(tune.SweepError, match=r"no study named 'two'.*holds: one"):
        tune.load_study(sqlite(tmp_path / "s.db"), "two")


def test_trials_caps_the_grid_with_a_seeded_subset_and_ranges_are_sampled(tmp_path):
    space = tune.Space.parse(**SPACE)
    a = tune.open_study(sqlite(tmp_path / "a.db"), "a", space, trials=4, test=False, seed=3)
    b = tune.open_study(sqlite(tmp_path / "b.db"), "b", space, trials=4, test=False, seed=3)
    tune.run_worker(a, FakeTask())
    tune.run_worker(b, FakeTask())
    assert grid_points(tune.trial_rows(a)[0]) == grid_points(tune.trial_rows(b)[0])
    assert len(tune.trial_rows(a)[0]) == 4 and tune.trial_rows(a)[1] is None

    search = tune.Space.parse(units="4,8,16", lr="1e-4..1e-2")
    study = tune.open_study(sqlite(tmp_path / "c.db"), "c", search, trials=5, seed=0)
    assert tune.run_worker(study, FakeTask()) == 6
    rows, test = tune.trial_rows(study)
    assert len(rows) == 5 and all(1e-4 <= r["lr"] <= 1e-2 and r["units"] in (4, 8, 16) for r in rows)
    assert test["lr"] == tune.best(rows, search)["lr"]


def test_seeds_repeat_each_configuration_and_the_best_mean_wins(tmp_path):
    space = tune.Space.parse(seed="0,1,2,3", units="4,8,16")
    assert space.names == ["units", "seed"]
    capped = tune.open_study(sqlite(tmp_path / "c.db"), "capped", space, trials=5, test=False)
    assert len({tuple(t.system_attrs["fixed_params"].values()) for t in capped.trials}) == 4   # 1 config x 4
    study = tune.open_study(sqlite(tmp_path / "s.db"), "seeds", space)
    tune.run_worker(study, FakeTask(luck={(16, 0): 0.03}))      # p = 16 is best with seed 0 only
    rows, test = tune.trial_rows(study)
    assert len(rows) == 12 and max(rows, key=lambda r: r["score"])["units"] == 16
    top = tune.best(rows, space)
    assert (top["units"], top["runs"]) == (8, 4) and (test["units"], test["seed"]) == (8, 0)
    console = Console(record=True, width=140)
    console.print(tune_report.summary(rows, space, "macro_f1"))
    lines = [line for line in console.export_text().splitlines() if "★" in line]
    assert len(lines) == 1 and lines[0].replace("│", " ").split()[:2] == ["8", "4"]
    tune_report.plot(rows, space, "macro_f1", [tmp_path / "u.png"])
    # a configuration with a pruned seed cannot win: the mean of its surviving seeds would flatter it
    cut = [{**r, "state": "pruned"} if (r["units"], r["seed"]) == (8, 3) else r for r in rows]
    assert tune.best(cut, space)["units"] != 8


def test_ctrl_c_queues_the_interrupted_trial_again(tmp_path):
    class Interrupted(FakeTask):
        def validate(self, config, log):
            if config["units"] == 4:
                raise KeyboardInterrupt
            return super().validate(config, log)

    space = tune.Space.parse(units="2,4,8")
    study = tune.open_study(sqlite(tmp_path / "s.db"), "c", space)
    with pytest.raises(KeyboardInterrupt):
        tune.run_worker(study, Interrupted())
    assert tune.progress(study) == {"waiting": 3, "running": 0, "finished": 2}   # 8, test, and 4 again
    tune.run_worker(study, FakeTask())
    rows, test = tune.trial_rows(study)
    assert [(r["units"], r["state"]) for r in rows] == [(2, "complete"), (8, "complete"), (4, "complete")]
    assert test["units"] == 8


def test_hopeless_trials_are_pruned_and_failures_recorded(tmp_path):
    space = tune.Space.parse(units="8,16,32,1,2,4", cell="gru")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = tune.open_study(sqlite(tmp_path / "s.db"), "p", space, pruner=pruner)
    tune.run_worker(study, FakeTask(epochs=3, fail_units=32))
    rows, test = tune.trial_rows(study)
    state = {r["units"]: r["state"] for r in rows}
    assert state[32] == "fail" and "out of memory" in next(r["error"] for r in rows if r["units"] == 32)
    assert state[1] == state[2] == "pruned"                   # below the median of 8 and 16 at epoch 1
    pruned = next(r for r in rows if r["units"] == 1)
    assert pruned["score"] == pytest.approx(FakeTask().score({"units": 1, "cell": "gru"}, 1))
    assert (test["state"], test["units"]) == ("complete", 8)
    tune_report.plot(rows, space, "macro_f1", [tmp_path / "u.png"])   # pruned and failed trials plot too


# ----------------------------------------------------------------------------------------------------------
# the command itself, on real training


@pytest.fixture(scope="module")
def tiny_tweets(tmp_path_factory) -> Path:
    """A TweetEval-format folder of short made-up texts: two classes told apart by their words."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    words = [["bad", "sad", "awful", "meh", "ugh"], ["good", "happy", "great", "fine", "yay"]]
    (folder / "mapping.txt").write_text("0\tnegative\n1\tpositive\n")
    for split, n in (("train", 48), ("val", 24), ("test", 24)):
        labels = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(words[y], rng.integers(2, 6))) + " @user" for y in labels]
        (folder / f"{split}_text.txt").write_text("\n".join(texts) + "\n")
        (folder / f"{split}_labels.txt").write_text("\n".join(map(str, labels)) + "\n")
    return folder


def rnnlab_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from rnnlab.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "160", **(env or {})})


def test_command_sweeps_real_training_and_writes_table_csv_plot(tiny_tweets, tmp_path):
    out = tmp_path / "sweep"
    args = ["tune", str(tiny_tweets), "--units", "2,4", "--epochs", "1", "--maxlen", "8", "--embeddings",
            "none", "--out", str(out), "--quiet"]
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache")}
    done = rnnlab_cli(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert "2 trials, 0 finished" in text and "this worker ran 2 trial(s) and the test retrain" in text
    assert "then the best retrained and scored once on test" in text and "written on the machine" in text
    assert "val macro_f1" in text and "scored once on test" in text and "T = " in text
    rows = read_csv(out / "trials.csv")
    assert [(r["role"], r["units"], r["state"]) for r in rows] == [
        ("trial", "2", "complete"), ("trial", "4", "complete"), ("test", rows[-1]["units"], "complete")]
    assert all(int(r["params"]) > int(r["rnn_params"]) > 0 for r in rows)
    assert 0 <= float(rows[-1]["test"]) <= 1
    assert (out / "units.png").stat().st_size > 10_000 and (out / "units.svg").is_file()
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "metrics.json").is_file()

    again = rnnlab_cli(*args, "--report-only", "--json", cwd=tmp_path, env=env)   # the stored study, nothing rerun
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 finished" in again.stderr and "this worker ran" not in again.stderr
    result = json.loads(again.stdout)                                    # stdout holds the JSON alone
    assert [t["units"] for t in result["trials"]] == [2, 4] and result["metric"] == "macro_f1"
    assert result["best"]["units"] == result["test"]["units"] and result["test"]["state"] == "complete"
    assert result["files"] == [str(out / "trials.csv"), str(out / "units.png"), str(out / "units.svg")]
    other = rnnlab_cli(*args[:-1], "--epochs", "2", cwd=tmp_path, env=env)
    assert other.returncode == 2 and "holds another sweep" in other.stdout


def test_cross_validation_folds_split_train_and_score_by_their_mean(tiny_tweets, monkeypatch):
    import jax

    from rnnlab import data, train
    from rnnlab.data.vocab import Vocabulary
    from rnnlab.models import ModelConfig, TextClassifier
    from rnnlab.tune.task import TrainTask, cross_validation

    dataset = data.load(tiny_tweets, progress=False)
    folds = cross_validation(dataset, 3, seed=0)
    train_texts = sorted(dataset["train"].texts)
    assert sorted(t for f in folds for t in f["val"].texts) == train_texts          # each text validates once
    for f in folds:
        assert sorted(f["train"].texts + f["val"].texts) == train_texts and "test" not in f
        assert set(f["val"].labels) == {0, 1}                                       # stratified

    seen = []

    def fake_fit(config, dataset, out_dir=None, *, progress, callback, evaluate_test):
        score = len(dataset["val"]) / 100
        for epoch in (1, 2):
            callback(epoch, score, [])
        seen.append((config.units, len(dataset["train"])))
        model = TextClassifier(ModelConfig(vocab_size=10, classes=2, k=4, units=config.units),
                               key=jax.random.key(0))
        return train.FitResult(best_score=score, best_epoch=2, metric="macro_f1", members=(model,),
                               vocab=Vocabulary(["<pad>", "<unk>"]), labels=dataset.labels, history=[{}, {}])

    monkeypatch.setattr(train, "fit", fake_fit)
    task = TrainTask(dataset, train.Config(epochs=2, embeddings=None), folds=3)
    log = tune.TrialLog(None)
    score = task.validate({"units": 4}, log)
    assert score == pytest.approx(np.mean([len(f["val"]) / 100 for f in folds]))
    assert sorted(log.scores) == [1, 2, 3, 4, 5, 6]                     # fold i, epoch e -> step 2i + e
    assert len(seen) == 3 and log.notes["fold_scores"] == [len(f["val"]) / 100 for f in folds]
    # GRU, p = k = 4, two directions: W_a (3p, k), U_a (3p, p), b_a (3p) and the candidate's own bias (p)
    assert log.notes["rnn_params"] == 2 * (12 * 4 + 12 * 4 + 12 + 4)
    with pytest.raises(ValueError, match="folds"):
        TrainTask(dataset, train.Config(), folds=1)


# ----------------------------------------------------------------------------------------------------------
# storage: bad URLs, unreachable servers, workers racing to create it; files several workers write


@pytest.mark.parametrize(("url", "words"), [
    ("bogus://", "not a database URL SQLAlchemy can open"),
    ("nonsense", "not a database URL; use sqlite:///PATH"),
    ("postgresql://me:secret@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db: cannot reach the database"),
])
def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path, url, words):
    with pytest.raises(tune.SweepError, match=re.escape(words)) as e:
        tune.storage(url)
    assert "secret" not in str(e.value) and "\n" not in str(e.value)
    from typer.testing import CliRunner

    from rnnlab.cli import app

    data = tmp_path / "t.csv"
    data.write_text("text,label\n" + "good,p\nbad,n\n" * 10)
    result = CliRunner().invoke(app, ["tune", str(data), "--units", "2", "--embeddings", "none", "--storage", url,
                                      "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert words in " ".join(result.output.split()) and "Traceback" not in result.output


def test_workers_racing_to_create_a_sqlite_storage_retry(tmp_path, monkeypatch):
    import sqlalchemy.exc

    real, calls = sweep.RDBStorage, []

    def racing(*args, **kwargs):               # what the loser of the race sees, twice
        calls.append(1)
        if len(calls) <= 2:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "RDBStorage", racing)
    assert tune.storage(sqlite(tmp_path / "s.db")) is not None and len(calls) == 3


STARTER = """
import sys, time
from pathlib import Path
from rnnlab import tune
url, go = sys.argv[1:3]
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.005)
tune.open_study(tune.storage(url), "race", tune.Space.parse(units="2,4"), settings={})
print("ok", flush=True)
"""


def test_three_workers_starting_together_on_a_fresh_sqlite_file(tmp_path):
    script, go, url = tmp_path / "start.py", tmp_path / "go", sqlite(tmp_path / "fresh.db")
    script.write_text(STARTER)
    procs = [subprocess.Popen([sys.executable, str(script), url, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate()   # imported, waiting on `go`
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err[-800:] for _, err in outputs]
    study = optuna.load_study(study_name="race", storage=url)
    assert len(study.get_trials()) == 3                              # queued once: two trials and the test


def test_two_writers_of_one_csv_never_collide(tmp_path):
    import threading

    rows = [{"trial": i, "units": 2 ** i, "score": 0.5} for i in range(200)]
    errors = []

    def write():
        try:
            for _ in range(40):
                tune_report.write_csv(rows, tmp_path / "trials.csv")
        except OSError as e:  # the fixed name trials.csv.tmp: one writer renames the other's file away
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(read_csv(tmp_path / "trials.csv")) == 200
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]     # no temporary file left behind


# ----------------------------------------------------------------------------------------------------------
# worker processes: killed and resumed; many sharing one study

WORKER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from test_tune import FakeTask, SPACE
from rnnlab import tune
url, name, sleep, heartbeat, go = sys.argv[1:6]
study = tune.open_study(tune.storage(url, heartbeat=int(heartbeat)), name, tune.Space.parse(**SPACE),
                        settings={{"epochs": 2}})
print("ready", flush=True)
while go != "-" and not Path(go).exists():
    time.sleep(0.05)
ran = tune.run_worker(study, FakeTask(sleep=float(sleep)), poll_s=0.2, wait_s=60.0)
rows, test = tune.trial_rows(study)
print("ran", ran, "rows", len(rows), "test", test["state"] if test else None, flush=True)
"""


def worker(tmp_path: Path, url: str, name: str, sleep: float, heartbeat: int, go: str = "-"
           ) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    return subprocess.Popen([sys.executable, str(script), url, name, str(sleep), str(heartbeat), go],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_sweep_resumes_keeping_its_finished_trials(tmp_path):
    url = sqlite(tmp_path / "s.db")
    proc = worker(tmp_path, url, "killed", sleep=0.5, heartbeat=1)
    assert proc.stdout.readline().strip() == "ready", proc.communicate()
    deadline = time.monotonic() + 60
    done: list = []
    while len(done) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
        with sweep._quiet():
            study = optuna.load_study(study_name="killed", storage=url)
            done = study.get_trials(states=(TrialState.COMPLETE,))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.value, t.datetime_start, t.datetime_complete) for t in study.get_trials(
        states=(TrialState.COMPLETE,))}
    killed = {t.number: t.params for t in study.get_trials(states=(TrialState.RUNNING,))}
    assert 3 <= len(before) < 12 and len(killed) <= 1

    study = tune.open_study(tune.storage(url, heartbeat=1), "killed", tune.Space.parse(**SPACE),
                            settings={"epochs": 2})
    tune.run_worker(study, FakeTask(), poll_s=0.2, wait_s=30.0)
    rows, test = tune.trial_rows(study)
    assert grid_points(rows) == sorted((p["units"], p["cell"]) for p in tune.Space.parse(**SPACE).grid())
    assert all(r["state"] == "complete" for r in rows) and test["state"] == "complete"
    after = {t.number: (t.value, t.datetime_start, t.datetime_complete) for t in study.get_trials()}
    assert all(after[n] == kept for n, kept in before.items())       # finished trials kept, not rerun
    # the trial running when the worker died went stale and ran again, under a new number
    assert {t.number for t in study.get_trials(states=(TrialState.FAIL,))} == set(killed)
    for number, params in killed.items():
        if not {"units", "cell"} <= set(params):   # killed between its two suggestions: the grid check above holds
            continue
        again = [r for r in rows if (r["units"], r["cell"]) == (params["units"], params["cell"])]
        assert len(again) == 1 and again[0]["trial"] > number


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("RNNLAB_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("RNNLAB_TEST_POSTGRES_URL is not set in CI, where .ci/run starts PostgreSQL")
        pytest.skip("RNNLAB_TEST_POSTGRES_URL is not set: `. .ci/postgres` starts a local server and sets it")
    return url


@pytest.mark.postgres
def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres_url):
    name = f"shared-{uuid.uuid4().hex[:8]}"
    go = tmp_path / "go"
    procs = [worker(tmp_path, postgres_url, name, sleep=0.3, heartbeat=10, go=str(go)) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.communicate()
        go.touch()                                                    # both start taking trials at once
        outputs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        study = optuna.load_study(study_name=name, storage=tune.storage(postgres_url))
        trials = study.get_trials()
        ran = Counter(t.user_attrs["worker"] for t in trials)
        assert len(ran) == 2                                          # both workers took trials
        assert len(trials) == 13 and all(t.state == TrialState.COMPLETE for t in trials)
        points = Counter((t.params["units"], t.params["cell"]) for t in trials if t.params)
        assert len(points) == 12 and set(points.values()) == {1}      # every trial ran exactly once
        for stdout, _ in outputs:                                     # each worker's final table: all 12
            assert stdout.strip().splitlines()[-1].endswith("rows 12 test complete"), stdout
        rows, test = tune.trial_rows(study)
        console = Console(record=True, width=140)
        console.print(tune_report.table(rows, tune.sweep_space(study), "macro_f1"))
        assert len([line for line in console.export_text().splitlines() if "complete" in line]) == 12
        assert (test["units"], test["cell"]) == (8, "gru")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=tune.storage(postgres_url))


def test_the_table_fits_80_columns_cuts_no_number_and_says_what_it_left_out():
    space = tune.Space.parse(units="4,8,16,32,64,128,256", cell="gru,lstm")
    rows = [{"trial": i, "role": "trial", "state": "fail" if i == 5 else "complete", **c,
             "params": 1_234_567 * (i + 1), "rnn_params": 123_456 * (i + 1), "score": None if i == 5 else 0.5 + i / 100,
             "epochs": 8, "seconds": 123.4, "error": "RuntimeError: out of memory while allocating" if i == 5 else None}
            for i, c in enumerate(space.grid())]
    console = Console(width=80, record=True, color_system=None)
    console.print(tune_report.table(rows, space, "macro_f1", title="t", width=80))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert "17,283,938" in text and "0.63 ★" in text                      # the largest count, the best, whole
    said = " ".join(text.split())
    assert "trial 5 failed: RuntimeError: out of memory while allocating" in said
    assert "left out at 80 columns: recurrent (trials.csv holds every column)" in said
    wide = Console(width=160, record=True, color_system=None)
    wide.print(tune_report.table(rows, space, "macro_f1", width=160))
    assert "recurrent" in wide.export_text() and "left out" not in wide.export_text()


def test_tune_refuses_data_too_small_to_validate_on(tmp_path):
    from typer.testing import CliRunner

    from rnnlab.cli import app

    data = tmp_path / "two.csv"
    data.write_text("text,label\ngood,p\nbad,n\n")
    result = CliRunner().invoke(app, ["tune", str(data), "--units", "2", "--embeddings", "none", "--out",
                                      str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2 and "too few to hold out a validation split" in " ".join(
        result.output.replace("│", " ").split())
    assert not (tmp_path / "o").exists()
