"""The quality suite: rnnlab's defaults against a TF-IDF floor and a PyTorch peer on every tweet task.

    python benchmarks/quality.py --jobs 3                     # all 14 tasks, test scored once
    python benchmarks/quality.py --val-only --tasks emotion english@500 --models floor rnnlab \\
        --variant small=units=32,dropout=0.5                  # choosing defaults: validation alone

Tasks: TweetEval emotion, hate, irony and UMSAB english, french, italian, spanish (from ../shared/data),
and each of them with its training split cut to 500 texts (`NAME@500`: a seeded draw, stratified by
class; val and test untouched) as the small-data case. Models, each fitted on train and chosen on val:

  floor       TF-IDF word 1-2 + char_wb 2-5 n-grams, logistic regression with balanced class weights,
              C in {0.3, 1, 3, 10} chosen on val (`rnnlab.baseline`)
  torch-peer  a 1-layer bidirectional torch.nn.GRU, 64 units a direction, max-pool over the valid steps,
              GloVe 6B 50d fine-tuned, class weights, Adam, early stopping on val, rnnlab's tokens
  rnnlab      `rnnlab train DATA` with no flags (`rnnlab.train.Config()`)
  NAME        a variant: `--variant NAME=field=value,field=value` (fields of `rnnlab.train.Config`)

Scores are each task's official metric (`rnnlab.metrics`; UMSAB: macro-F1). Test is scored once, at the
end of each fit, unless `--val-only`. Every model is fitted in a process of its own, so that no library's
thread pool competes with another's. Writes JSON (`--out`) and a Markdown table (`--md`) with wall times
and the mean and worst margin of each model over the floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
FOLDERS = {"emotion": "tweeteval/emotion", "hate": "tweeteval/hate", "irony": "tweeteval/irony",
           "english": "umsab/english", "french": "umsab/french", "italian": "umsab/italian",
           "spanish": "umsab/spanish"}
SMALL = 500
TASKS = (*FOLDERS, *(f"{t}@{SMALL}" for t in FOLDERS))
UMSAB_LABELS = ("negative", "neutral", "positive")
# published UMSAB test macro-F1 (../shared/data/umsab/README.txt): fastText and XLM-R, one language each
UMSAB_PUBLISHED = {"english": (50.9, 68.2), "french": (54.8, 72.0), "italian": (54.7, 71.5),
                   "spanish": (50.1, 65.9)}


# -- data ------------------------------------------------------------------------------------------------

def cut(split, n: int, seed: int):
    """`n` texts of `split`, a seeded draw stratified by class (each class keeps its share, at least 1)."""
    from rnnlab.data.dataset import Split

    labels = np.asarray(split.labels)
    if n >= len(labels):
        return split
    classes, counts = np.unique(labels, return_counts=True)
    take = np.maximum(1, np.floor(counts * n / len(labels)).astype(int))
    order = np.argsort(-(counts * n / len(labels) - take))  # largest remainders first
    i = 0
    while take.sum() < n:
        take[order[i % len(order)]] += 1
        i += 1
    rng = np.random.default_rng([seed, n])
    rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), t, replace=False)
                                   for c, t in zip(classes, take, strict=True)]))
    return Split([split.texts[r] for r in rows], labels[rows], split.source)


def load_task(name: str, data: Path = DATA, seed: int = 0):
    """The dataset of a suite task: `emotion`, ..., `spanish`, or `NAME@N` (train cut to N texts)."""
    from rnnlab import data as rdata

    base, _, n = name.partition("@")
    if base not in FOLDERS:
        raise SystemExit(f"unknown task {name!r}: use one of {', '.join(TASKS)}")
    folder = data / FOLDERS[base]
    dataset = rdata.load(folder, progress=False)
    if dataset.labels == ("0", "1", "2") and folder.parent.name == "umsab":  # no mapping.txt: its documented names
        dataset = dataclasses.replace(dataset, labels=UMSAB_LABELS)
    if n:
        dataset = dataclasses.replace(dataset, splits=dict(dataset.splits, train=cut(dataset["train"], int(n), seed)))
    return dataset


# -- models ----------------------------------------------------------------------------------------------

def run_floor(dataset, val_only: bool) -> dict:
    from rnnlab.baseline import fit_floor

    start = time.perf_counter()
    floor = fit_floor(dataset["train"], dataset["val"], dataset.labels, dataset.task)
    test = None if val_only else floor.evaluate(dataset["test"])
    return {"val": floor.val["score"], "test": None if test is None else test["score"],
            "C": floor.C, "val_by_C": floor.summary()["val_by_C"],
            "train_seconds": round(time.perf_counter() - start, 1)}


def parse_overrides(text: str) -> dict:
    """`units=32,embeddings=none` -> {"units": 32, "embeddings": None}, typed by `Config`'s defaults."""
    from rnnlab.train import Config

    types = {f.name: f for f in dataclasses.fields(Config)}
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise SystemExit(f"bad override {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(types)}")
        default = types[key].default
        if value.lower() in ("none", "null"):
            out[key] = None
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            out[key] = int(value)
        elif isinstance(default, float) or (default is None and value.replace(".", "", 1).isdigit()):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def run_rnnlab(dataset, overrides: dict, val_only: bool) -> dict:
    from rnnlab.train import Config, fit

    if "baseline" in {f.name for f in dataclasses.fields(Config)}:
        overrides = {"baseline": False, **overrides}  # the floor is its own row here
    config = Config(**overrides)
    start = time.perf_counter()
    result = fit(config, dataset, progress=False, evaluate_test=not val_only)
    return {"val": result.best_score, "test": None if result.test is None else result.test["score"],
            "best_epoch": result.best_epoch, "epochs": len(result.history),
            "train_seconds": round(time.perf_counter() - start, 1), "overrides": overrides}


def run_torch_peer(dataset, val_only: bool, threads: int = 1, seed: int = 0, epochs: int = 20, patience: int = 3,
                   batch_size: int = 32, lr: float = 2e-3, units: int = 64, maxlen: int = 64) -> dict:
    """The peer: embedding (GloVe, fine-tuned) -> BiGRU(64) -> max over valid steps -> linear."""
    import torch
    from torch import nn

    from rnnlab import metrics
    from rnnlab.data import Vocabulary, embedding_matrix, load_vectors, tokenize
    from rnnlab.data.batches import encode
    from rnnlab.train import class_weight

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    train, val = dataset["train"], dataset["val"]
    C = len(dataset.labels)
    vocab = Vocabulary.build([tokenize(t) for t in train.texts])
    E, _ = embedding_matrix(vocab, load_vectors("glove-6b-50d"), seed=seed)

    def tensors(split):
        ids, lengths = encode(split.texts, vocab, maxlen)
        ids, lengths = np.asarray(ids)[..., 0] if np.ndim(ids) == 3 else ids, lengths
        return torch.from_numpy(ids).long(), torch.from_numpy(lengths).long(), torch.from_numpy(split.labels).long()

    def score(model, split) -> dict:
        ids, lengths, labels = tensors(split)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(ids[i:i + 256], lengths[i:i + 256]).argmax(1)
                              for i in range(0, len(ids), 256)]).numpy()
        return metrics.report(labels.numpy(), pred, dataset.labels, dataset.task)

    from peers import torch_bigru  # beside this script

    model = torch_bigru(E, units, C)
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    weights = torch.from_numpy(class_weight(train.labels, C, "balanced"))
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    ids, lengths, labels = tensors(train)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, bad, done = -1.0, None, 0, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in torch.randperm(len(ids), generator=gen).split(batch_size):
            optim.zero_grad()
            loss = loss_fn(model(ids[batch], lengths[batch]), labels[batch])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
        done = epoch
        s = score(model, val)["score"]
        if s > best:
            best, best_epoch, bad = s, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    test = None if val_only else score(model, dataset["test"])["score"]
    return {"val": best, "test": test, "best_epoch": best_epoch, "epochs": done, "train_seconds": round(seconds, 1)}


# -- the table -------------------------------------------------------------------------------------------

def margins(table: dict, model: str, key: str) -> dict | None:
    """Mean and worst (model - floor) over the tasks where both have a `key` score, in points."""
    diffs = {t: 100 * (row[model][key] - row["floor"][key]) for t, row in table["tasks"].items()
             if model in row and "floor" in row and row[model].get(key) is not None
             and row["floor"].get(key) is not None}
    if not diffs:
        return None
    worst = min(diffs, key=diffs.get)
    return {"mean": round(float(np.mean(list(diffs.values()))), 2), "worst": round(diffs[worst], 2),
            "worst_task": worst, "tasks": len(diffs)}


def markdown(table: dict) -> str:
    """The suite as Markdown: one row per task, `test (val) seconds` per model, then the margins."""
    key = "val" if table["val_only"] else "test"
    models = table["models"]
    lines = [f"Scores in points under each task's official metric; {'validation' if key == 'val' else 'test'}"
             + (" (validation in brackets)" if key == "test" else "") + ", then wall seconds of the fit.", "",
             "| task (metric) | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for task, row in table["tasks"].items():
        cells = []
        for m in models:
            r = row.get(m)
            if r is None:
                cells.append("")
                continue
            s = f"{100 * r[key]:.1f}" if r.get(key) is not None else "-"
            if key == "test":
                s += f" ({100 * r['val']:.1f})"
            cells.append(f"{s} {r['train_seconds']:.0f} s")
        lines.append(f"| {task} ({row['metric']}) | " + " | ".join(cells) + " |")
    for label, fn in (("mean margin over the floor", "mean"), ("worst margin over the floor", "worst")):
        cells = []
        for m in models:
            g = margins(table, m, key)
            cells.append("" if g is None or m == "floor" else
                         f"{g[fn]:+.1f}" + (f" ({g['worst_task']})" if fn == "worst" else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    means = []
    for m in models:
        vals = [row[m][key] for row in table["tasks"].values() if m in row and row[m].get(key) is not None]
        means.append(f"{100 * np.mean(vals):.1f}" if vals else "")
    lines.append("| mean score | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding tweeteval/ and umsab/")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="tasks to run (default: all 14)")
    parser.add_argument("--models", nargs="+", default=["floor", "torch-peer", "rnnlab"],
                        help="floor, torch-peer, rnnlab and variant names")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a model: rnnlab with Config fields changed, e.g. small=units=32,dropout=0.5")
    parser.add_argument("--val-only", action="store_true", help="score validation only (to choose defaults)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the small-data cuts and of every model")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    parser.add_argument("--md", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--jobs", type=int, default=1, help="models fitted at once, each in its own process")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="the peer's threads (one: on a busy machine a pool's threads wait on each other)")
    parser.add_argument("--one", nargs=3, metavar=("TASK", "MODEL", "OVERRIDES"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # a child process: one network on one task, its JSON row on the last line
        task, name, overrides = args.one
        dataset = load_task(task, args.data, args.seed)
        if name == "floor":
            row = run_floor(dataset, args.val_only)
        elif name == "torch-peer":
            row = run_torch_peer(dataset, args.val_only, threads=args.torch_threads, seed=args.seed)
        else:
            row = run_rnnlab(dataset, {"seed": args.seed, **json.loads(overrides)}, args.val_only)
        print(json.dumps(row))
        return

    variants = {"rnnlab": {}}
    for v in args.variant:
        name, sep, text = v.partition("=")
        if not sep or name in ("floor", "torch-peer", "rnnlab"):
            raise SystemExit(f"bad --variant {v!r}: expected NAME=field=value,... with a new NAME")
        variants[name] = parse_overrides(text)
    models = list(dict.fromkeys([*args.models, *(v for v in variants if v != "rnnlab" and v not in args.models)]))
    for m in models:
        if m not in ("floor", "torch-peer") and m not in variants:
            raise SystemExit(f"unknown model {m!r}: floor, torch-peer, rnnlab or a --variant name")
    from rnnlab.metrics import official_metric

    table = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "val_only": args.val_only,
             "seed": args.seed, "models": models, "variants": {m: variants[m] for m in models if m in variants},
             "command": " ".join(sys.argv), "tasks": {}}
    def child(task: str, m: str) -> dict:
        """One network on one task in a process of its own: its JSON row."""
        cmd = [sys.executable, __file__, "--data", str(args.data), "--seed", str(args.seed),
               "--torch-threads", str(args.torch_threads), "--one", task, m, json.dumps(variants.get(m, {}))]
        if args.val_only:
            cmd.append("--val-only")
        load = os.getloadavg()[0]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{task} {m} failed:\n{done.stderr[-3000:]}")
        return {**json.loads(done.stdout.strip().splitlines()[-1]),
                "load_average": round((load + os.getloadavg()[0]) / 2, 1)}

    def record(task: str, m: str, r: dict) -> None:
        row = table["tasks"][task]
        row[m] = r
        test = "" if r.get("test") is None else f"  test {r['test']:.4f}"
        print(f"{task:12s} {m:14s} {row['metric']:10s} val {r['val']:.4f}{test}  {r['train_seconds']:6.1f} s"
              f"  (load {r['load_average']})", flush=True)
        for name in models:
            if name != "floor":
                table.setdefault("margins", {})[name] = margins(table, name, "val" if args.val_only else "test")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=2) + "\n")
        tmp.replace(args.out)
        if args.md:
            args.md.write_text(markdown(table))

    networks = []
    for task in args.tasks:
        dataset = load_task(task, args.data, args.seed)
        table["tasks"][task] = {"metric": official_metric(dataset.task), "train": len(dataset["train"])}
        networks.extend((task, m) for m in models)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(child, t, m): (t, m) for t, m in networks}
        for future in as_completed(futures):  # each row written as it comes
            record(*futures[future], future.result())
    print(markdown(table))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
