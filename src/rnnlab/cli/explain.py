"""`rnnlab explain` and `rnnlab inspect`: units and timesteps made visible."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from rnnlab.cli.app import app
from rnnlab.cli.app import fail as _fail

console = Console()


def _check_sizes(**sizes: int) -> None:
    why = {
        "features": "k is the length of each x_t; an input with no features carries nothing",
        "units": "p is the size of the state a_t; a layer with no units has no state to carry",
        "timesteps": "T is how many times the loop runs; a sequence needs at least one step",
        "batch": "B is how many sequences run side by side",
        "layers": "a network needs at least one recurrent layer",
    }
    for name, value in sizes.items():
        if value < 1:
            _fail(f"--{name} must be at least 1; got {value}: {why[name]}.")


EXPLAIN_EPILOG = """
[bold]Examples[/]

  rnnlab explain --cell elman --features 50 --units 10 --timesteps 20
      20 words of 50 features each, read into 10 units

  rnnlab explain --units 30 --timesteps 20 --svg loop.svg
      30 units, 20 words; the unrolled loop also written as SVG

  rnnlab explain --cell lstm -k 100 -p 64 -T 2000 --batch 32 --outputs 3
      the same weights for T=2000: parameters unchanged, FLOPs and memory x100

  rnnlab explain runs/emotion-gru
      a saved run (from rnnlab train), explained from its own arrays
"""


@app.command(epilog=EXPLAIN_EPILOG)
def explain(
    run: Path | None = typer.Argument(None, help="A run folder written by `rnnlab train` (optional)."),
    cell: str = typer.Option("elman", "--cell", "-c", help="elman, gru, lstm, mingru or minlstm."),
    features: int = typer.Option(50, "--features", "-k", help="k: features per timestep x_t."),
    units: int = typer.Option(10, "--units", "-p", help="p: units of the state a_t."),
    timesteps: int = typer.Option(20, "--timesteps", "-T", help="T: steps the loop runs."),
    batch: int = typer.Option(1, "--batch", "-B", help="B: sequences per batch (for the costs)."),
    outputs: int = typer.Option(2, "--outputs", "-q", help="q: outputs of y_t (0: no readout)."),
    layers: int = typer.Option(1, "--layers", help="Recurrent layers stacked."),
    every_step: bool = typer.Option(
        False, "--every-step", help="y_t at every step (many-to-many), not only at t=T (many-to-one)."
    ),
    svg: Path | None = typer.Option(None, "--svg", show_default="none",
                                    help="Also write the unrolled loop as an SVG file."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON instead of tables."),
) -> None:
    """Show what a recurrent layer is made of: equations with shapes, every parameter, the cost, the loop.

    p (units) and T (timesteps) are independent: the tables show which numbers depend on which.
    """
    from rnnlab.teach.explain import build
    from rnnlab.teach.explain import explain as explain_model
    from rnnlab.teach.explain_views import unrolled_svg

    _check_sizes(features=features, units=units, timesteps=timesteps, batch=batch, layers=layers)
    if outputs < 0:
        _fail(f"--outputs must be 0 (no readout) or more; got {outputs}.")
    if run is not None:
        model, T = _load_run_model(run)
        timesteps = T if timesteps == 20 and T else timesteps
    else:
        if cell.lower() not in ("elman", "rnn", "gru", "lstm", "mingru", "minlstm"):
            _fail(f"unknown --cell {cell!r}: use elman, gru, lstm, mingru or minlstm.")
        G = {"elman": 1, "rnn": 1, "gru": 3, "lstm": 4, "mingru": 2, "minlstm": 3}[cell.lower()]
        U = 0 if cell.lower().startswith("min") else units  # min cells have no U_a
        count = G * units * (features + U + 1) + (layers - 1) * G * units * (units + U + 1)
        if count * 4 > MAX_BYTES:
            _fail(
                f"{cell} with k={features} and p={units} would hold {count:,} parameters "
                f"({count * 4 / 2**30:.1f} GiB): too large to build here"
                + ("." if U == 0 else f" (U_a alone is p×p = {units * units:,}).")
            )
        model = build(
            cell.lower(), features=features, units=units, outputs=outputs, layers=layers, every_step=every_step
        )
    try:
        result = explain_model(model, timesteps=timesteps, batch=batch)
    except ValueError as e:
        _fail(str(e))
    if svg is not None:
        if svg.is_dir():
            _fail(f"--svg {svg} is a folder: give the file to write, e.g. {svg / 'loop.svg'}.")
        from rnnlab.checkpoint import atomic_write

        try:
            atomic_write(svg, unrolled_svg(result).encode("utf-8"))
        except (OSError, ValueError) as e:
            _fail(f"--svg {e}.")  # the file and why: "PATH: cannot write it (reason)"
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(result)
    if svg is not None:
        console.print(f"unrolled loop written to {svg}")


MAX_BYTES = 2 * 2**30  # the largest model `explain` builds to read off its arrays


def _switch_hint(word: str) -> str:
    """A run named `true` was most likely meant as a switch's value (`--json true`): switches take none."""
    if word.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        return f"; if {word!r} was meant for a switch such as --json: switches take no value, --json alone is on"
    return ""


def _load_run_model(run: Path):
    """(model, T) from a run folder: the model and the padded length it was trained with."""
    if not run.exists():
        _fail(f"{run}: no such run folder (write one with `rnnlab train`){_switch_hint(str(run))}.")
    from rnnlab.runs import load_run
    from rnnlab.teach.elman.experiments import SequenceRun

    try:
        loaded = load_run(run)
    except (FileNotFoundError, ValueError, KeyError) as e:
        _fail(f"{run}: cannot read the run: {e}")
    if isinstance(loaded, SequenceRun):
        return loaded.model, int(loaded.config.get("window", 0))
    T = getattr(loaded, "maxlen", None)
    return loaded.model, int(T) if T else 0


INSPECT_EPILOG = """
[bold]Examples[/]

  rnnlab inspect runs/emotion-gru "I can't believe how happy this makes me"
      a trained classifier: p rows × T columns, and the label it gives after each word

  rnnlab inspect elman:sentences "man eat cookie dragon smash glass"
      Elman's sentences (a network is trained first, a few seconds): y_t is the next word it expects

  rnnlab inspect runs/emotion-gru "so tired of this" --json > states.json
      the raw matrix (rows = units, columns = tokens) and y_t as JSON
"""


@app.command(epilog=INSPECT_EPILOG)
def inspect(
    run: str = typer.Argument(..., help="A run folder from `rnnlab train`, or elman:xor|letters|sentences."),
    text: str = typer.Argument(..., help="The text to read (for elman: words, letters or bits)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the heatmap: OUT.png and OUT.svg (default demo-out/inspect)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the raw matrix and y_t as JSON."),
    seed: int = typer.Option(0, "--seed", help="For elman:*, the seed of the network trained first."),
) -> None:
    """Show the hidden states of one text: a heatmap of p rows (units) × T columns (its tokens).

    Also the prediction y_t after each step. Only the text's own T steps are drawn: padding has no column.
    """
    from rnnlab.teach import states_views

    if not text.strip():
        _fail("the text is empty: give at least one token to read.")
    result = None
    if run.startswith("elman:"):
        result = _inspect_elman(run, text, seed)
    else:
        path = Path(run)
        if not path.exists():
            _fail(f"{run}: no such run folder (write one with `rnnlab train`, or use elman:sentences)"
                  f"{_switch_hint(run)}.")
        result = _inspect_run_folder(path, text)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        if out is None:
            return
    stem = out or Path("demo-out") / "inspect"
    try:
        files = states_views.render(result, stem)
    except OSError as e:
        _fail(f"--out {stem}: cannot write {e.filename or stem} ({e.strerror or e}).")
    if not as_json:
        console.print(states_views.terminal(result, width=console.width))
        for note in result.notes:
            console.print(note, style="dim")
        console.print("written: " + ", ".join(str(f) for f in files))


def _elman_words(task: str, text: str) -> list[str]:
    """The tokens of `text` for an Elman stream: words; or letters / bits, written together or apart."""
    words = text.split()
    if task in ("letters", "xor") and len(words) == 1:
        words = list(words[0])
    return words


def _inspect_run_folder(path: Path, text: str):
    """The hidden states of `text` in the run folder `path`, whichever kind of run it holds."""
    from rnnlab.runs import load_run
    from rnnlab.teach.elman.experiments import SequenceRun
    from rnnlab.teach.states import inspect_run, inspect_sequence

    try:
        run = load_run(path)
    except (FileNotFoundError, ValueError, KeyError) as e:
        _fail(f"{path}: cannot read the run: {e}")
    if not isinstance(run, SequenceRun):
        result = inspect_run(run, text)
        result.title = result.title or path.name
        return result
    try:
        return inspect_sequence(run.model, run.data, _elman_words(run.data.name.split(":")[1], text))
    except ValueError as e:
        _fail(str(e))


def _inspect_elman(name: str, text: str, seed: int):
    from rnnlab.teach.elman import data as elman
    from rnnlab.teach.elman import experiments
    from rnnlab.teach.states import inspect_sequence

    task = name.removeprefix("elman:").lower()
    if task not in elman.NAMES:
        _fail(f"unknown dataset {name!r}: use elman:xor, elman:letters or elman:sentences.")
    words = _elman_words(task, text)
    with console.status(f"training a network on {name} first"):
        run = experiments.train_sequence(name, seed=seed)
    try:
        return inspect_sequence(run.model, run.data, words)
    except ValueError as e:
        _fail(str(e))
