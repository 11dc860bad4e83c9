"""TweetEval with the defaults of `rnnlab train`, beside a plain PyTorch peer, in one run.

    python benchmarks/tweeteval.py                         # emotion, hate, irony from ../shared/data/tweeteval
    python benchmarks/tweeteval.py --tasks irony --out /tmp/irony.json

For each task it trains
  rnnlab        `rnnlab train DATA` with no flags: the recommended defaults (GloVe 6B 50d, fine-tuned)
  rnnlab-noglove the same with `--embeddings none` (embeddings learned from scratch)
  torch-peer    a 1-layer bidirectional torch.nn.GRU, 64 units a direction, max-pool over valid steps,
                the same GloVe vectors fine-tuned, class weights, early stopping on validation
and writes a JSON table of test (and validation) scores under each task's official metric, with wall
times. Every model reads the same tokens (rnnlab's tokenizer and vocabulary), so only the networks and
their training differ. Models are chosen on validation only; test is scored once, at the end. Each model
trains in a process of its own, so that no thread pool of one library competes with another's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tweeteval"


def run_rnnlab(dataset, **overrides) -> dict:
    from rnnlab.train import Config, fit

    config = Config(**overrides)
    start = time.perf_counter()
    result = fit(config, dataset, progress=False)
    return {"val": result.best_score, "test": result.test["score"], "test_accuracy": result.test["accuracy"],
            "best_epoch": result.best_epoch, "epochs": len(result.history),
            "train_seconds": round(time.perf_counter() - start, 1), "config": config.to_dict()}


def run_torch_peer(dataset, seed: int = 0, epochs: int = 20, patience: int = 3, batch_size: int = 32,
                   lr: float = 2e-3, units: int = 64, maxlen: int = 64) -> dict:
    """The peer: embedding (GloVe, fine-tuned) -> BiGRU(64) -> max over valid steps -> linear."""
    import torch
    from torch import nn

    from rnnlab import metrics
    from rnnlab.data import Vocabulary, embedding_matrix, load_vectors, tokenize
    from rnnlab.data.batches import encode
    from rnnlab.train import class_weight

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    train, val, test = dataset["train"], dataset["val"], dataset["test"]
    C = len(dataset.labels)
    vocab = Vocabulary.build([tokenize(t) for t in train.texts])
    E, _ = embedding_matrix(vocab, load_vectors("glove-6b-50d"), seed=seed)

    class Peer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding.from_pretrained(torch.from_numpy(E), freeze=False, padding_idx=0)
            self.gru = nn.GRU(E.shape[1], units, batch_first=True, bidirectional=True)
            self.dropout = nn.Dropout(0.3)
            self.head = nn.Linear(2 * units, C)

        def forward(self, ids, lengths):
            x = self.embedding(ids)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            a, _ = self.gru(packed)
            a, _ = nn.utils.rnn.pad_packed_sequence(a, batch_first=True, padding_value=-1e9)
            return self.head(self.dropout(a.max(dim=1).values))

    def tensors(split):
        ids, lengths = encode(split.texts, vocab, maxlen)
        return torch.from_numpy(ids).long(), torch.from_numpy(lengths).long(), torch.from_numpy(split.labels).long()

    def score(model, split) -> dict:
        ids, lengths, labels = tensors(split)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(ids[i:i + 256], lengths[i:i + 256]).argmax(1)
                              for i in range(0, len(ids), 256)]).numpy()
        return metrics.report(labels.numpy(), pred, dataset.labels, dataset.task)

    model = Peer()
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
    t = score(model, test)
    return {"val": best, "test": t["score"], "test_accuracy": t["accuracy"], "best_epoch": best_epoch,
            "epochs": done, "train_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of TweetEval task folders")
    parser.add_argument("--tasks", nargs="+", default=["emotion", "hate", "irony"])
    parser.add_argument("--models", nargs="+", default=["rnnlab", "rnnlab-noglove", "torch-peer"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tweeteval.json")
    parser.add_argument("--one", nargs=2, metavar=("TASK", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from rnnlab import data
    from rnnlab.metrics import official_metric

    if args.one:  # a child process: train one model on one task, print its JSON row
        task, name = args.one
        dataset = data.load(args.data / task, progress=False)
        runs = {"rnnlab": run_rnnlab, "rnnlab-noglove": lambda d: run_rnnlab(d, embeddings=None),
                "torch-peer": run_torch_peer}
        if name not in runs:
            raise SystemExit(f"unknown model {name!r}: use {', '.join(runs)}")
        print(json.dumps(runs[name](dataset)))
        return

    table = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "tasks": {}}
    for task in args.tasks:
        dataset = data.load(args.data / task, progress=False)
        row = table["tasks"][task] = {"metric": official_metric(dataset.task)}
        for name in args.models:
            load = os.getloadavg()[0]
            child = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--one", task, name],
                                   capture_output=True, text=True, check=False)
            if child.returncode != 0:
                raise SystemExit(f"{task} {name} failed:\n{child.stderr[-3000:]}")
            row[name] = json.loads(child.stdout.strip().splitlines()[-1])
            row[name]["load_average"] = round((load + os.getloadavg()[0]) / 2, 1)
            r = row[name]
            print(f"{task:8s} {name:15s} {row['metric']:10s} val {r['val']:.4f}  test {r['test']:.4f}  "
                  f"{r['train_seconds']:6.1f} s  (load {r['load_average']})", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
