"""`rnnlab train`, `rnnlab evaluate`, `rnnlab predict`: tweets (or any labelled text) in, labels out."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnnlab.cli.app import app


def _d(name: str):
    """The default of a Config field, so that the options and `rnnlab.train.Config` never disagree."""
    from rnnlab.train import Config

    return Config.__dataclass_fields__[name].default


console = Console(stderr=True)
out_console = Console()


@contextmanager
def _errors():
    """Turn bad input into one clear line and exit status 2, not a traceback."""
    from rnnlab.data import DataError

    try:
        yield
    except (DataError, FileNotFoundError, ValueError, KeyError, ConnectionError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _scores_table(title: str, rows: list[tuple[str, dict | None]], metric: str) -> Table:
    """One row per split: the official metric, accuracy, and macro-F1 where it is not the metric."""
    columns = [metric, "accuracy", *(["macro_f1"] if metric != "macro_f1" else [])]
    table = Table(title=title)
    table.add_column("split")
    for column in columns:
        table.add_column(column, justify="right")
    for name, r in rows:
        if r is not None:
            values = {metric: r["score"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
            table.add_row(name, *(f"{values[c]:.4f}" for c in columns))
    return table


def floor_line(floor: dict, val: float, metric: str) -> str:
    """The TF-IDF floor's scores beside the model's validation score, in one line."""
    test = "" if floor.get("test") is None else f", test {floor['test']:.4f}"
    return (f"floor, TF-IDF + LR (C={floor['C']:g}): val {floor['val']:.4f}{test}; network "
            f"{100 * (val - floor['val']):+.1f} on val")


def _recorded_floor(run: Path) -> dict | None:
    """The floor's scores that `rnnlab train` wrote to the run's metrics.json, where it has them."""
    from rnnlab.checkpoint import METRICS

    path = run / METRICS
    try:
        floor = json.loads(path.read_text(encoding="utf-8")).get("baseline") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return floor if isinstance(floor, dict) else None


def _notes(lines: list[str]) -> None:
    """What the data's readers decided, one line each, on stderr (warnings in yellow)."""
    for line in lines:
        style = "yellow" if line.startswith("warning:") else "dim"
        console.print(line, style=style, highlight=False, soft_wrap=True)


def _held_out(dataset, config):
    """The dataset training sees: its own val split, or a share of train held out (said in one line).
    Refuses data too small to leave a text to validate on."""
    from rnnlab.data.dataset import missing_classes
    from rnnlab.train import split_off_val

    split = split_off_val(dataset, config.val_fraction, config.seed)
    if "val" not in dataset:
        if not len(split["val"]):
            raise ValueError(f"{dataset.source}: train has {len(dataset['train'])} texts, too few to hold out a "
                             "validation split (a label needs 2 texts to give one): add texts or a val split")
        console.print(f"val: {len(split['val'])} of the {len(dataset['train'])} training texts held out "
                      f"({config.val_fraction:.0%} of each label, seed {config.seed}); --val-fraction sets the "
                      "share, a `split` column (or a val file) gives your own", highlight=False, soft_wrap=True)
    _notes(missing_classes(split))
    return split


TRAIN_EPILOG = """
[bold]Examples[/]

  rnnlab train ../shared/data/tweeteval/emotion --out runs/emotion        [dim]# the recommended defaults[/]
  rnnlab train tweeteval:irony --out runs/irony                           [dim]# downloaded on first use[/]
  rnnlab train tweets.csv --text-column tweet --label-column y --out runs/mine
  rnnlab train DATA --cell lstm --units 32 --maxlen 20 --pooling last --embeddings none --out runs/small
  rnnlab train DATA --out runs/emotion --resume            [dim]# continue after an interruption[/]
  rnnlab train elman:sentences --out runs/sentences        [dim]# Elman (1990): y_t at every step[/]

Writes RUN/config.json, RUN/model.safetensors and RUN/metrics.json (validation and test scores under the
task's official metric: macro_f1, f1_irony, f1_against_favor or macro_recall).
"""


@app.command(epilog=TRAIN_EPILOG)
def train(
    data: str = typer.Argument(..., help="A TweetEval-format folder, tweeteval:NAME, or a CSV/TSV/JSONL file "
                               "(or a folder of train/val/test files)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write (checkpoints, config, metrics)."),
    cell: str | None = typer.Option(
        None, help=f"elman | gru | lstm | mingru | minlstm \\[default: {_d('cell')}; elman for elman:NAME]."),
    units: int | None = typer.Option(None, help=f"p: units of the state a_t (per direction) \\[default: "
                                     f"{_d('units')}; elman:NAME: the task's own]."),
    layers: int = typer.Option(_d("layers"), help="Recurrent layers stacked."),
    bidirectional: bool = typer.Option(_d("bidirectional"), "--bidirectional/--unidirectional",
                                       help="Read each text both ways."),
    pooling: str = typer.Option(_d("pooling"), help="last | mean | max over the valid steps."),
    maxlen: int = typer.Option(_d("maxlen"), help="T at most: tokens kept per text."),
    embeddings: str = typer.Option(_d("embeddings"), help="glove-6b-50d, a word2vec/GloVe file, or none."),
    freeze_embeddings: bool = typer.Option(_d("freeze_embeddings"), "--freeze-embeddings/--tune-embeddings",
                                           help="Keep pretrained vectors fixed, or fine-tune them."),
    k: int = typer.Option(_d("k"), help="Features of x_t without pretrained vectors."),
    embed_lr: float = typer.Option(_d("embed_lr"), help="The embedding's learning rate, relative to --lr."),
    vector_words: int = typer.Option(_d("vector_words"), help="Also give the vocabulary the first N words of "
                                     "the pretrained vectors (GloVe's most frequent) that no training text "
                                     "holds: other texts read their vectors."),
    min_freq: int = typer.Option(_d("min_freq"), help="Tokens seen fewer times in train become <unk>."),
    max_vocab: int = typer.Option(_d("max_vocab"), help="Training tokens in the vocabulary at most."),
    dropout: float = typer.Option(_d("dropout"), help="Dropout between layers and before the head."),
    embed_dropout: float = typer.Option(_d("embed_dropout"), help="Dropout on x_t."),
    subwords: int = typer.Option(_d("subwords"), help="Rows of the table of hashed character 3-5-grams whose "
                                 "mean is added to each token's x_t (0: none)."),
    baseline: bool = typer.Option(_d("baseline"), "--baseline/--no-baseline", help="Also fit the TF-IDF + "
                                  "logistic regression floor on train (C chosen on val) and report it."),
    pretrain_epochs: int = typer.Option(_d("pretrain_epochs"), help="Passes of next-word pretraining of the "
                                        "embedding and the layer on the training texts, before the labels."),
    members: int = typer.Option(_d("members"), help="Models trained side by side, probabilities averaged."),
    ema: float = typer.Option(_d("ema"), help="Keep a moving average of the weights with this decay (0: off)."),
    epochs: int | None = typer.Option(None, help=f"Epochs at most \\[default: {_d('epochs')}; elman:NAME: the "
                                      "task's own]."),
    batch_size: int = typer.Option(_d("batch_size"), help="B: texts per step."),
    lr: float | None = typer.Option(None, help=f"Peak learning rate (AdamW, warm-up then cosine decay) "
                                    f"\\[default: {_d('lr')}; elman:NAME: the task's own]."),
    weight_decay: float = typer.Option(_d("weight_decay"), help="AdamW weight decay."),
    clip: float = typer.Option(_d("clip"), help="Clip the gradient's global norm to this."),
    class_weights: str = typer.Option(_d("class_weights"), help="balanced | none."),
    patience: int = typer.Option(_d("patience"), help="Epochs without a better val score before stopping."),
    max_seconds: float | None = typer.Option(None, show_default="no limit",
                                             help="Stop training after this many seconds (best model kept)."),
    seed: int = typer.Option(_d("seed"), help="Same seed, same data: same model."),
    checkpoint_every: int = typer.Option(_d("checkpoint_every"), help="Steps between checkpoints in an epoch."),
    engine: str = typer.Option(_d("engine"), help="Where the recurrent layers run: auto (the fused CPU engine "
                               "where it runs, else the scan), scan, or fused (an error says why where it cannot)."),
    val_fraction: float = typer.Option(_d("val_fraction"), help="Share of each label's training texts held out to "
                                       "validate on, where the data has no val split."),
    text_column: str = typer.Option("text", help="Text column of CSV/JSONL data."),
    label_column: str = typer.Option("label", help="Label column of CSV/JSONL data."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint "
                                "(with the settings it started with)."),
    keep_state: bool = typer.Option(False, "--keep-state", help="Keep RUN/state.safetensors (the optimiser's "
                                    "state, several times the model's size) when the run finishes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the result (scores, best epoch, run folder) as JSON."),
) -> None:
    """Train a text classifier: embedding (k) -> RNN (p units) -> pooling -> linear head.

    On elman:xor, elman:letters or elman:sentences: a many-to-many network, y_t at every step."""
    from rnnlab import data as rdata
    from rnnlab.checkpoint import CONFIG
    from rnnlab.train import Config, RunFinishedError, fit

    if data.startswith("elman:"):
        from rnnlab.cli.elman import train_elman

        train_elman(data, out, cell=cell or "elman", units=units, epochs=epochs, lr=lr, seed=seed)
        return
    cell = cell or _d("cell")
    units = _d("units") if units is None else units
    epochs = _d("epochs") if epochs is None else epochs
    lr = _d("lr") if lr is None else lr
    with _errors():
        if (out / CONFIG).is_file() and not resume:
            raise ValueError(f"{out} already holds a run: pass --resume to continue it, "
                             "or choose another --out")
        config = Config(
            maxlen=maxlen, min_freq=min_freq, max_vocab=max_vocab,
            embeddings=None if embeddings.lower() in ("none", "") else embeddings, k=k, embed_lr=embed_lr,
            vector_words=vector_words, members=members, ema=ema,
            freeze_embeddings=freeze_embeddings, cell=cell, units=units, layers=layers,
            bidirectional=bidirectional, pooling=pooling, dropout=dropout, embed_dropout=embed_dropout,
            pretrain_epochs=pretrain_epochs, subwords=subwords, baseline=baseline,
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, clip=clip,
            class_weights=class_weights, patience=patience, max_seconds=max_seconds, seed=seed,
            checkpoint_every=checkpoint_every, val_fraction=val_fraction, engine=engine).validate()
        dataset = rdata.load(data, text_column=text_column, label_column=label_column, progress=not quiet)
        _notes(dataset.notes)
        if not quiet:
            sizes = ", ".join(f"{s} {len(v)}" for s, v in dataset.splits.items())
            console.print(f"[bold]{dataset.task}[/]: {len(dataset.labels)} labels "
                          f"({', '.join(dataset.labels)}); {sizes}", highlight=False, soft_wrap=True)
        _held_out(dataset, config)
        try:
            result = fit(config, dataset, out, progress=not quiet, resume=resume, keep_state=keep_state,
                         exist_ok=False, say=lambda line: console.print(line, highlight=False, soft_wrap=True))
        except RunFinishedError as e:
            console.print(str(e), highlight=False, soft_wrap=True)
            if as_json:
                print(json.dumps({"run": str(out), "finished": True, "message": str(e)}))
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            from rnnlab.checkpoint import MODEL, STATE

            kept = (out / STATE).is_file() or (out / MODEL).is_file()
            line = (f"interrupted: {out} keeps its last checkpoint; `rnnlab train {data} --out {out} --resume` "
                    "continues it" if kept else f"interrupted before {out} held a checkpoint: nothing to resume")
            console.print(escape(line), highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    if as_json:
        print(json.dumps({"run": str(out), "task": dataset.task, "metric": result.metric,
                          "best_epoch": result.best_epoch, "seconds": round(result.seconds, 3),
                          "val": result.val, "test": result.test, "baseline": result.baseline}))
        return
    title = f"{dataset.task}: best epoch {result.best_epoch}, {result.seconds:.0f} s"
    out_console.print(_scores_table(title, [("val", result.val), ("test", result.test)], result.metric))
    if result.baseline is not None:
        out_console.print(floor_line(result.baseline, result.val["score"], result.metric), highlight=False)
    out_console.print(f"run written to {out}")


EVALUATE_EPILOG = """
[bold]Examples[/]

  rnnlab evaluate runs/emotion ../shared/data/tweeteval/emotion                  [dim]# test split[/]
  rnnlab evaluate runs/emotion ../shared/data/tweeteval/emotion --split val --json
  rnnlab evaluate runs/mine tweets.csv --split val    [dim]# the rows training held out of tweets.csv[/]
"""


@app.command(epilog=EVALUATE_EPILOG)
def evaluate(
    run: Path = typer.Argument(..., help="A run folder written by `rnnlab train`."),
    data: str = typer.Argument(..., help="Data in any form `rnnlab train` reads."),
    split: str | None = typer.Option(None, help="train | val | test \\[default: test, or val where the data has "
                                     "no test split]. val on data without one: the rows training held out."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    text_column: str = typer.Option("text", help="Text column of CSV/JSONL data."),
    label_column: str = typer.Option("label", help="Label column of CSV/JSONL data."),
) -> None:
    """Score a trained run on a split: official metric, accuracy, per-class scores, confusion matrix."""
    import numpy as np

    from rnnlab import data as rdata
    from rnnlab import metrics
    from rnnlab.checkpoint import load_run

    with _errors():
        r = load_run(run)
        dataset = rdata.load_labelled(data, text_column=text_column, label_column=label_column, progress=False)
        _notes(dataset.notes)
        split = split or ("test" if "test" in dataset else "val")
        if split == "val" and "val" not in dataset and "train" in dataset:
            from rnnlab.train import split_off_val

            fraction, seed = r.config.get("val_fraction", 0.1), r.config.get("seed", 0)
            dataset = split_off_val(dataset, fraction, seed)
            console.print(f"val: the {len(dataset['val'])} training texts a run with --val-fraction {fraction:g} "
                          f"and --seed {seed} holds out", highlight=False, soft_wrap=True)
        if split not in dataset:
            raise KeyError(f"{data} has no {split!r} split (it has: {', '.join(dataset.splits)}); --split val "
                           "scores the texts training held out of train")
        part = dataset[split]
        unknown = [name for name in dataset.labels if name not in r.labels]
        if unknown:
            raise ValueError(f"{data} has labels the run never saw: {', '.join(unknown)} "
                             f"(the run knows {', '.join(r.labels)})")
        to_run = np.array([r.labels.index(name) for name in dataset.labels])
        y_true = to_run[part.labels]
        absent = [name for i, name in enumerate(r.labels) if i not in set(y_true.tolist())]
        if absent:
            _notes([f"warning: {split} has no text labelled {', '.join(absent)}: its macro-F1 counts F1 0 for "
                    "each of them, so it can sit far below its accuracy"])
        y_pred = r.predict_proba(part.texts).argmax(axis=1)
        report = metrics.report(y_true, y_pred, r.labels, r.task)
        described = dict(zip(dataset.labels, dataset.descriptions, strict=True)) if dataset.descriptions else {}
        floor = _recorded_floor(run)
    if as_json:
        extra = {"descriptions": [described.get(name, "") for name in r.labels]} if described else {}
        print(json.dumps({"split": split, report["metric"]: report["score"], **report, **extra, "baseline": floor}))
        return
    out_console.print(_scores_table(f"{r.task} ({run})", [(split, report)], report["metric"]))
    if floor is not None and floor.get(split) is not None:
        out_console.print(f"floor, TF-IDF + LR fitted with the run (C={floor['C']:g}): {split} {floor[split]:.4f}; "
                          f"network {100 * (report['score'] - floor[split]):+.1f}", highlight=False)
    per = Table(title="per class")
    for col in ("label", "precision", "recall", "f1", "support", *(["description"] if described else [])):
        per.add_column(col, justify="left" if col in ("label", "description") else "right", overflow="fold")
    for name, s in report["per_class"].items():
        per.add_row(name, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", str(s["support"]),
                    *([described.get(name, "")] if described else []))
    out_console.print(per)
    if report["confusion"] is None:   # too many classes to list whole: --json gives its non-zero cells
        return
    widest = max(len(str(n)) for row in report["confusion"] for n in row)
    needed = max(map(len, r.labels)) + 4 + sum(max(len(name), widest) + 3 for name in r.labels)
    if needed > out_console.width:       # Rich would cut the counts: say so instead of printing them cut
        out_console.print(f"confusion matrix: {len(r.labels)} labels need {needed} columns, the terminal has "
                          f"{out_console.width}: --json gives it whole", highlight=False)
        return
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for name in r.labels:
        cm.add_column(name, justify="right")
    for name, row in zip(r.labels, report["confusion"], strict=True):
        cm.add_row(name, *map(str, row))
    out_console.print(cm)


PREDICT_EPILOG = """
[bold]Examples[/]

  rnnlab predict runs/emotion "I can't wait for the weekend!"
  rnnlab predict runs/emotion "so angry right now" "what a lovely day" --json
  cat tweets.txt | rnnlab predict runs/emotion                 [dim]# one text a line from stdin[/]
"""


@app.command(epilog=PREDICT_EPILOG)
def predict(
    run: Path = typer.Argument(..., help="A run folder written by `rnnlab train`."),
    texts: list[str] | None = typer.Argument(None, help="Texts; none (or -) reads one a line from stdin."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object a line: text, label, probabilities."),
) -> None:
    """Label texts with a trained run and print each label's probability.

    One output line per input line: a blank line gets a blank line (with --json, label null)."""
    from rnnlab.checkpoint import load_run

    with _errors():
        r = load_run(run)
        if not texts or texts == ["-"]:
            texts = [line.rstrip("\r\n") for line in sys.stdin]
        given = [t for t in texts if t.strip()]
        if not given:
            raise ValueError("no text to classify: pass texts as arguments or one a line on stdin")
        by_text = iter(r.predict_proba(given))
    for text in texts:
        if not text.strip():                   # kept, so that output line i answers input line i
            if as_json:
                print(json.dumps({"text": text, "label": None, "probabilities": None}, ensure_ascii=False))
            else:
                print()
            continue
        p = next(by_text)
        label = r.labels[int(p.argmax())]
        probs = {name: round(float(v), 6) for name, v in zip(r.labels, p, strict=True)}
        if as_json:
            print(json.dumps({"text": text, "label": label, "probabilities": probs}, ensure_ascii=False,
                             allow_nan=False))
        else:
            shown = "  ".join(f"{name} {v:.3f}" for name, v in probs.items())
            line = f"[bold]{escape(label)}[/]\t{escape(shown)}\t[dim]{escape(text)}[/]"
            if out_console.is_terminal:        # one line a text: cut to the terminal's width, the cut marked …
                out_console.print(line, highlight=False, no_wrap=True, overflow="ellipsis")
            else:                              # piped: one line a text, whole
                out_console.print(line, highlight=False, soft_wrap=True)
