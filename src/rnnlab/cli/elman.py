"""Elman's (1990) experiments on the command line: `rnnlab demo` (the paper's three tasks) and `train_elman`,
which `rnnlab demo` runs for each task and `rnnlab train elman:NAME` runs for one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console

from rnnlab.cli.app import app
from rnnlab.cli.app import fail as _fail

console = Console()


DEMO_EPILOG = """
[bold]Examples[/]

  rnnlab demo                          Elman's three tasks, figures in demo-out/
  rnnlab demo --only sentences --out /tmp/elman --seed 3
"""


@app.command(epilog=DEMO_EPILOG)
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for the figures (PNG and SVG)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated data and of the weights."),
    only: str | None = typer.Option(None, "--only", show_default="all three",
                                    help="One task only: xor, letters or sentences."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Passes over each stream (default: the task's own, 5 for the sentences)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print each task's numbers and figures as JSON; the "
                                 "report goes to stderr."),
) -> None:
    """Elman (1990), "Finding Structure in Time": train a simple recurrent network on the paper's tasks.

    Sentences: 10,000 generated sentences, one word per step, next word predicted at every step; prints
    the error against the best possible prediction and the tree of the words' mean hidden states.
    Also the temporal XOR and the letter sequences, with their figures.
    """
    tasks = ("xor", "letters", "sentences")
    if only is not None:
        only = only.removeprefix("elman:").lower()
        if only not in tasks:
            _fail(f"unknown --only {only!r}: use xor, letters or sentences.")
        tasks = (only,)
    if epochs is not None and epochs < 1:
        _fail(f"--epochs must be at least 1; got {epochs}.")
    global console
    console, stdout = Console(stderr=as_json), console       # with --json, stdout holds the JSON alone
    start = time.perf_counter()
    results = {}
    try:
        for task in tasks:
            result = train_elman(task, out / f"elman-{task}-run", seed=seed, epochs=epochs, figures=out)
            results[task] = {k: v for k, v in result.items() if k not in ("text", "tree")}
        console.print(f"\n[bold]done[/] in {time.perf_counter() - start:.0f} s; figures in {out}/")
    finally:
        console = stdout
    if as_json:
        typer.echo(json.dumps({"seconds": round(time.perf_counter() - start, 3), "tasks": results}, default=float))


def train_elman(
    name: str,
    run_dir: Path,
    *,
    cell: str = "elman",
    units: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    figures: Path | None = None,
) -> dict:
    """Train a many-to-many network on an Elman stream, print what it learned, write the figures (into
    `figures`, default `run_dir`) and save the run into `run_dir`. None takes the task's default.

    This is what `rnnlab demo` runs for each task, and what `rnnlab train elman:NAME --out RUN` can call.
    """
    from rnnlab.teach.elman import experiments, views

    task = name.removeprefix("elman:").lower()
    if task not in experiments.DEFAULTS:
        _fail(f"unknown dataset {name!r}: use elman:xor, elman:letters or elman:sentences.")
    d = dict(experiments.DEFAULTS[task])
    for key, value in (("units", units), ("epochs", epochs), ("lr", lr)):
        if value is not None:
            if not value > 0:
                _fail(f"--{key} must be positive; got {value}.")
            d[key] = value
    console.rule(f"[bold]elman:{task}[/]  {experiments.DESCRIPTIONS[task]}")
    console.print(
        f"training {'an Elman' if cell in ('elman', 'rnn') else f'a {cell.upper()}'} network: "
        f"k={experiments.FEATURES[task]} inputs, p={d['units']} units (the paper: {experiments.PAPER[task]}), "
        f"{d['epochs']} passes over the stream"
    )
    try:
        with console.status(f"training on elman:{task}"):
            run = experiments.train_sequence(
                f"elman:{task}", cell=cell, units=d["units"], epochs=d["epochs"], lr=d["lr"], seed=seed
            )
            result = views.report(run, figures or run_dir)
    except ValueError as e:
        _fail(str(e))
    console.print(
        f"  trained in {run.seconds:.1f} s; training loss per step {run.history[0]:.3f} -> {run.history[-1]:.3f} nats"
    )
    console.print(result["text"], highlight=False)
    if "tree" in result:
        console.print("\n  the words' mean hidden states, clustered (distance at each join):", highlight=False)
        console.print("\n".join("    " + line for line in result["tree"].splitlines()), highlight=False)
    for f in result["files"]:
        if f.endswith(".png"):
            console.print(f"  figure: {f}")
    try:
        folder = experiments.save_sequence(run, run_dir, result)
    except ValueError as e:  # a folder holding another run, or one that cannot be written
        _fail(str(e))
    console.print(f'  run saved: {folder}   (try: rnnlab inspect {folder} "{EXAMPLES[task]}")', highlight=False)
    return result


EXAMPLES = {"xor": "110011101", "letters": "badiiguuuba", "sentences": "man eat cookie dragon smash glass"}
