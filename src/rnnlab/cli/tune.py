"""`rnnlab tune`: sweep the number of units (and other choices) with Optuna, on one machine or many."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rnnlab.cli.app import app

console = Console(stderr=False)

EPILOG = """\
[bold]Examples[/bold]

  [dim]# units on a log grid, GRU and LSTM, 8 epochs a trial; the study: runs/tune-emotion/study.db[/dim]
  rnnlab tune ../shared/data/tweeteval/emotion --units 4,8,16,32,64,128,256 --cell gru,lstm --epochs 8

  [dim]# interrupted? the same command again keeps the finished trials and runs the rest[/dim]

  [dim]# a search: 30 trials sampled (TPE) over units, a learning-rate range and dropout[/dim]
  rnnlab tune tweeteval:irony --units 16,32,64,128 --lr 3e-4..1e-2 --dropout 0,0.2,0.4 --trials 30

  [dim]# many machines, one study: run this same command on each (see docs/tuning.md)[/dim]
  rnnlab tune DATA --units 8,16,32,64,128 --storage postgresql://USER:PASS@HOST/rnnlab --study emotion-units

  [dim]# the table, CSV and plot of a study so far, without running trials[/dim]
  rnnlab tune DATA --units 8,16,32,64,128 --report-only
"""


NOT_SWEPT = "not swept: train's default"


def _study_name(data: str) -> str:
    name = data.rstrip("/").split(":")[-1]
    return Path(name).name.replace("/", "-") or "study"


def _enable_compile_cache() -> None:
    """Keep compiled programs on disk: a resumed sweep and the final retraining reuse them."""
    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rnnlab" / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


class Display:
    """The Rich progress display: one bar for the study's trials, one line for the running trial."""

    def __init__(self, progress: Progress, total: int, done: int, epochs: int, metric: str):
        self.progress, self.epochs, self.metric = progress, epochs, metric
        self.finished: list[dict[str, Any]] = []
        self.bar = progress.add_task("trials", total=total, completed=done, info="")
        self.current = progress.add_task("", total=epochs, info="", visible=False)

    def trial_started(self, number: int, config: dict[str, Any], role: str) -> None:
        what = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())
        label = "test: retraining the best" if role == "test" else f"trial {number}"
        self.progress.update(self.current, description=f"{label} ({what})", completed=0, info="",
                             visible=True)

    def epoch(self, number: int, epoch: int, score: float) -> None:
        self.progress.update(self.current, completed=min(epoch, self.epochs),
                             info=f"val {self.metric} {score:.4f}")

    def trial_finished(self, row: dict[str, Any]) -> None:
        self.finished.append(row)
        self.progress.update(self.current, visible=False)
        self.progress.advance(self.bar)
        if row["role"] == "test":
            return
        score = "—" if row["score"] is None else f"{row['score']:.4f}"
        note = f"  [red]{row['error']}[/red]" if row.get("error") else ""
        self.progress.console.print(
            f"  trial {row['trial']:>3}  units {row.get('units')!s:>4}  {row['state']:<8}  val {score}"
            f"  {row['seconds'] or 0:.1f} s{note}")

    def waiting(self, running: int) -> None:
        self.progress.update(self.current, visible=True, completed=0,
                             description=f"waiting for {running} trial(s) running on other workers", info="")


HELP = "\n\n".join(" ".join(paragraph.split()) for paragraph in """
Tune the number of units p: every trial trains on [bold]train[/bold] and is scored on [bold]val[/bold] (the
task's official metric); the best configuration is retrained and scored once on [bold]test[/bold]. Writes a
table, OUT/trials.csv and OUT/units.png/.svg: validation score against units (log scale), with the parameter
count on a second axis.

Lists make a grid, a range (lo..hi) a search. The study is stored (SQLite by default), so a sweep stopped at
any point resumes with the same command; with a PostgreSQL --storage, any number of workers on any number of
machines run the same command and share the trials, each run exactly once.
""".strip().split("\n\n"))


@app.command(help=HELP, epilog=EPILOG)
def tune(
    data: str = typer.Argument(..., help="A TweetEval-format folder, tweeteval:NAME, or CSV/JSONL."),
    units: str = typer.Option(..., "--units", "-p", help="Numbers of units p to try, e.g. 8,16,32,64,128."),
    cell: str | None = typer.Option(
        None, help="Cells to try: elman,gru,lstm,mingru,minlstm (default: train's default)."),
    layers: str | None = typer.Option(None, help="Numbers of stacked layers to try, e.g. 1,2.",
                                      show_default=NOT_SWEPT),
    k: str | None = typer.Option(None, "--k", help="Embedding sizes k to try (without pretrained vectors).",
                                 show_default=NOT_SWEPT),
    dropout: str | None = typer.Option(None, help="Dropout rates: a list (0,0.3) or a range (0..0.5).",
                                       show_default=NOT_SWEPT),
    lr: str | None = typer.Option(None, help="Learning rates: a list (1e-3,3e-3) or a range (1e-4..1e-2).",
                                  show_default=NOT_SWEPT),
    maxlen: str | None = typer.Option(None, help="Maximum lengths T to try, e.g. 20,40,64.", show_default=NOT_SWEPT),
    trials: int | None = typer.Option(None, min=1, help="Trials in the study: a seeded subset of the grid "
                                      "(default: all of it; a configuration keeps all its --seeds), or how "
                                      "many to sample for a range (20)."),
    epochs: int = typer.Option(8, min=1, help="Epochs a trial trains at most (it stops early on val)."),
    patience: int = typer.Option(3, min=1, help="Epochs without a better validation score, then stop."),
    seed: int = typer.Option(0, help="The seed every trial trains with (and the sampler's)."),
    seeds: str | None = typer.Option(None, show_default="--seed alone", help="Repeat every configuration with "
                                     "each of these seeds, e.g. "
                                     "0,1,2: configurations are compared by their mean, the plot shows the "
                                     "spread."),
    embeddings: str = typer.Option("glove-6b-50d", help="Pretrained vectors (glove-6b-50d, a file) or none."),
    batch_size: int = typer.Option(32, min=1, help="Texts per batch."),
    folds: int = typer.Option(0, min=0, help="Score each trial by K-fold cross-validation on train (K >= 2) "
                              "instead of on the val split."),
    prune: bool | None = typer.Option(None, "--prune/--no-prune", help="Stop trials whose validation score "
                                      "is below the median of the earlier trials at the same epoch (from the "
                                      "3rd epoch, after 3 trials). Default: on, off with --seeds (a pruned "
                                      "seed would bias its configuration's mean)."),
    test: bool = typer.Option(True, help="At the end, retrain the best configuration, test it once."),
    out: Path | None = typer.Option(None, help="Folder for trials.csv, units.png/svg, best/ (default "
                                    "runs/tune-STUDY)."),
    storage: str | None = typer.Option(None, help="Where the study lives: sqlite:///PATH (default "
                                       "OUT/study.db), or postgresql://USER:PASS@HOST:PORT/DB for many "
                                       "machines."),
    study: str | None = typer.Option(None, help="Study name; workers with the same storage and name share it "
                                     "(default: the data's name)."),
    heartbeat: int = typer.Option(10, min=1, help="Seconds between a running trial's heartbeats; a trial "
                                  "silent for 3 of them (its worker died) is run again."),
    report_only: bool = typer.Option(False, "--report-only", help="Show the study's results; run no trials."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    as_json: bool = typer.Option(False, "--json", help="Print the result (every trial, the best, its test "
                                 "scores, the files written) as JSON; the tables go to stderr."),
) -> None:
    """Tune the number of units p (see HELP)."""
    options = dict(locals())
    import sqlalchemy.exc

    global console
    console = Console(stderr=as_json)      # with --json, stdout holds the JSON alone
    try:
        _tune(**options)
    except sqlalchemy.exc.SQLAlchemyError as e:            # the storage went away during the sweep
        text = str(getattr(e, "orig", None) or e).strip().splitlines()
        console.print(f"[red]error:[/red] the study's storage failed: {text[0] if text else type(e).__name__}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _tune(*, data, units, cell, layers, k, dropout, lr, maxlen, trials, epochs, patience, seed, seeds, embeddings,
          batch_size, folds, prune, test, out, storage, study, heartbeat, report_only, quiet, as_json) -> None:
    import optuna

    from rnnlab.tune import report as tune_report
    from rnnlab.tune import study as sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        space = sweep.Space.parse(units=units, cell=cell, layers=layers, k=k, dropout=dropout, lr=lr,
                                  maxlen=maxlen, seed=seeds)
    except sweep.SweepError as e:
        raise typer.BadParameter(str(e)) from None
    name = study or _study_name(data)
    out = out or Path("runs") / f"tune-{name}"
    storage = storage or f"sqlite:///{out / 'study.db'}"

    from rnnlab import data as data_
    from rnnlab import train
    from rnnlab.tune.task import TrainTask, token_lengths

    try:
        dataset = data_.load_labelled(data, progress=not quiet)
    except data_.DataError as e:
        raise typer.BadParameter(str(e)) from None
    for line in dataset.notes:
        console.print(line, style="yellow" if line.startswith("warning:") else "dim", highlight=False, soft_wrap=True)
    base = train.Config(epochs=epochs, patience=patience, seed=seed, batch_size=batch_size,
                        embeddings=None if embeddings.lower() == "none" else embeddings)
    if folds == 1:
        raise typer.BadParameter("--folds takes 0 (score on val) or K >= 2")
    try:
        task = TrainTask(dataset, base, out, folds=folds)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if "val" not in dataset and not folds:
        console.print(f"val: {len(task.dataset['val'])} of the {len(dataset['train'])} training texts held out "
                      f"({base.val_fraction:.0%} of each label, seed {seed})", highlight=False, soft_wrap=True)
    settings = {k_: v for k_, v in base.to_dict().items() if k_ not in space.names}
    settings |= {"data": _study_name(data), "folds": folds}
    if prune is None:
        prune = len(space.choices.get(sweep.REPEAT, ())) < 2
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3) if prune
              else optuna.pruners.NopPruner())
    try:
        db = sweep.storage(storage, heartbeat=heartbeat)
        if report_only:                                    # the study as stored, whatever this run asks
            st = sweep.load_study(db, name)
            space = sweep.sweep_space(st)
        else:
            st = sweep.open_study(db, name, space, settings=settings, trials=trials, test=test, seed=seed,
                                  pruner=pruner)
    except sweep.SweepError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None

    counts = sweep.progress(st, test=False)              # the test retrain is no trial: said apart
    total = sum(counts.values())
    where = sweep.where(storage)
    then = "; then the best retrained and scored once on test" if st.user_attrs["sweep"].get("test") else ""
    console.print(f"study [bold]{name}[/bold] in {where}: {total} trials, {counts['finished']} finished, "
                  f"{counts['running']} running, {counts['waiting']} queued{then}", highlight=False, soft_wrap=True)
    everything = sweep.progress(st)
    if not report_only and (everything["waiting"] or everything["running"]):
        _enable_compile_cache()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"))
        with Progress(*columns, console=console, disable=quiet) as bar:
            display = Display(bar, sum(everything.values()), everything["finished"], epochs * max(folds, 1),
                              task.metric)
            ran = sweep.run_worker(st, task, events=display)
        tested = sum(1 for r in display.finished if r["role"] == sweep.TEST_ROLE)
        console.print(f"this worker ran {ran - tested} trial(s)" + (" and the test retrain" if tested else ""))

    rows, test_row = sweep.trial_rows(st)
    lengths = token_lengths(dataset)
    note = (f"{data}: train texts have T = {statistics.median(lengths):g} tokens (median), "
            f"{int(sorted(lengths)[int(0.9 * (len(lengths) - 1))])} (90th percentile)")
    title = f"{name}: validation {task.metric} by units"
    console.print(tune_report.table(rows, space, task.metric, title=title, width=console.width))
    if len(space.choices.get(sweep.REPEAT, ())) > 1:
        console.print(tune_report.summary(rows, space, task.metric, title=f"{name}: over the seeds"))
    console.print(f"[dim]{note}[/dim]")
    if test_row is not None and test_row["state"] == "complete":
        config = {n: test_row.get(n) for n in space.names}
        console.print(Panel(
            f"best by validation: {json.dumps(config)}\n"
            f"val {task.metric} {test_row.get('val', float('nan')):.4f}   "
            f"test {task.metric} {test_row.get('test', float('nan')):.4f}   "
            f"(test accuracy {test_row.get('test_accuracy', float('nan')):.4f})\n"
            f"model in {out / 'best'}, written on the machine {str(test_row.get('worker')).split(':')[0]}",
            title="scored once on test", expand=False))
    elif test_row is not None:
        console.print(f"[red]the test trial failed:[/red] {test_row.get('error')}")
    csv_path = tune_report.write_csv(rows, out / "trials.csv", test_row)
    plots = tune_report.plot(rows, space, task.metric, [out / "units.png", out / "units.svg"],
                             title=f"{name}: validation {task.metric} vs units p", note=note) if rows else []
    console.print(f"wrote {csv_path}" + "".join(f", {p}" for p in plots))
    if as_json:
        top = sweep.best(rows, space)
        print(json.dumps({
            "study": name, "storage": sweep.where(storage), "metric": task.metric, "trials": rows,
            "best": None if top is None else {n: top[n] for n in space.names} | {"val": top["score"]},
            "test": test_row, "files": [str(csv_path), *map(str, plots)],
        }, default=str))
