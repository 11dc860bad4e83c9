"""Training speed: `rnnlab train`'s loop against the recurrent layers alone, and a PyTorch peer, in one run.

    python benchmarks/train_speed.py                      # JSON to benchmarks/results/train_speed.json
    python benchmarks/train_speed.py --copies 1 --epochs 2 --out /tmp/t.json
    python benchmarks/train_speed.py --profile hate       # where a step and an epoch go (JSON)

The task: every train split under ../shared/data (TweetEval emotion, hate, irony; UMSAB english, french,
italian, spanish: 22 471 tweets) as one labelled set of 20 classes ("task:label"), taken `--copies` times
(2: 44 942 tweets, the size of TweetEval emoji's train split); validation: the tasks' val splits.
Each contender runs in a process of its own:

  rnnlab        `fit` with the defaults (GloVe 6B 50d fine-tuned, BiGRU 64 a direction, max-pool, AdamW,
                moving average, length buckets of 32 tweets), `--epochs` epochs; an epoch's time includes
                its evaluation on val. Run twice, each with the same fresh compilation cache folder: the
                first compiles, the second loads what the first compiled.
  rnnlab-layers the recurrent layers alone, forward and backward (gradients of the weights and of x, as
                training needs them with E fine-tuned), on the same batches (the epoch's plan, x = E[tokens]
                gathered beforehand): the goal's denominator
  torch         the same model and training in PyTorch (nn.Embedding, nn.GRU bidirectional over packed
                sequences, max over valid steps, Adam with weight decay, clipping), on the same batches
  torch-layers  nn.GRU alone forward and backward on the same batches

Compile time is the sum of JAX's tracing, lowering and backend compilation events in the process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
TASKS = ("tweeteval/emotion", "tweeteval/hate", "tweeteval/irony", "umsab/english", "umsab/french",
         "umsab/italian", "umsab/spanish")


def dataset(copies: int):
    """The tasks' train splits (taken `copies` times) and val splits as one Dataset of task:label classes."""
    from rnnlab import data
    from rnnlab.data import Dataset, Split

    names, texts, labels, vtexts, vlabels = [], [], [], [], []
    for task in TASKS:
        d = data.load(DATA / task, progress=False)
        offset = len(names)
        names.extend(f"{task.split('/')[1]}:{name}" for name in d.labels)
        texts += d["train"].texts
        labels.append(d["train"].labels + offset)
        vtexts += d["val"].texts
        vlabels.append(d["val"].labels + offset)
    train_labels = np.concatenate(labels)
    splits = {"train": Split(texts * copies, np.tile(train_labels, copies), "train_speed"),
              "val": Split(vtexts, np.concatenate(vlabels), "train_speed")}
    return Dataset("train_speed", tuple(names), splits, "train_speed")


class Compiles:
    """Seconds JAX spends tracing, lowering and compiling while it listens."""

    def __init__(self):
        import jax

        self.seconds = {"trace": 0.0, "lower": 0.0, "backend": 0.0, "saved_by_cache": 0.0}
        self.programs = 0
        names = {"jaxpr_trace_duration": "trace", "jaxpr_to_mlir_module_duration": "lower",
                 "backend_compile_duration": "backend", "compile_time_saved_sec": "saved_by_cache"}

        def listen(event, seconds, **kw):
            name = names.get(event.rsplit("/", 1)[-1])
            if name:
                self.seconds[name] += seconds
                self.programs += name == "backend"

        jax.monitoring.register_event_duration_secs_listener(listen)

    @property
    def total(self) -> float:
        return self.seconds["trace"] + self.seconds["lower"] + self.seconds["backend"]


def run_rnnlab(args) -> dict:
    from rnnlab import compile_cache

    compile_cache.enable()
    compiles = Compiles()
    from rnnlab.train import Config, fit

    d = dataset(args.copies)
    start = time.perf_counter()
    result = fit(Config(epochs=args.epochs, patience=args.epochs + 1), d, progress=False, evaluate_test=False)
    wall = time.perf_counter() - start
    ends = [h["seconds"] for h in result.history]
    epochs = [ends[0], *np.diff(ends)]
    n = len(d["train"])
    return {"tweets": n, "epoch_seconds": [round(e, 3) for e in epochs],
            "tweets_per_second": [round(n / e) for e in epochs], "fit_seconds": round(wall, 2),
            "compile_seconds": round(compiles.total, 3),
            "compile_parts": {k: round(v, 3) for k, v in compiles.seconds.items()}, "programs": compiles.programs,
            "val": round(result.best_score, 4)}


def _plan(prep, config):
    from rnnlab.data.batches import bucket_edges, make, plan

    ids, lengths = prep.train
    batches = plan(lengths, config.batch_size, bucket_edges(config.maxlen), np.random.default_rng([0, 0]))
    return [make(ids, lengths, prep.dataset["train"].labels, T, rows, config.batch_size) for T, rows in batches]


def _prepared(copies: int):
    """(the defaults, the data, what `fit` prepares from them: vocabulary, E, encoded texts)."""
    from rnnlab.train import Config, prepare

    config, d = Config(), dataset(copies)
    return config, d, prepare(config, d)


def run_rnnlab_layers(args) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from rnnlab.layers import RNN

    config, _, prep = _prepared(args.copies)
    E, batches = prep.E[: prep.trained], _plan(prep, config)  # the rows training reads
    rnn = RNN(config.cell, features=E.shape[1], units=config.units, bidirectional=True, key=jax.random.key(0))
    params, static = eqx.partition(rnn, eqx.is_inexact_array)

    @jax.jit
    def forward_backward(params, x, lengths, w):
        def loss(params, x):
            a, _ = eqx.combine(params, static)(x, lengths)
            return (a * w).sum()

        return jax.grad(loss, argnums=(0, 1))(params, x)

    E = jnp.asarray(E)
    xs = [(jax.device_put(np.asarray(E[b.tokens])), jax.device_put(b.lengths)) for b in batches]
    w = {T: jnp.asarray(np.random.default_rng(T).normal(size=(config.batch_size, T, 2 * config.units)),
                        jnp.float32) for T in {b.tokens.shape[1] for b in batches}}
    for T in w:  # compile each shape first
        x, lengths = next((x, n) for x, n in xs if x.shape[1] == T)
        jax.block_until_ready(forward_backward(params, x, lengths, w[T]))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = [forward_backward(params, x, lengths, w[x.shape[1]]) for x, lengths in xs]
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    return {"batches": len(xs), "epoch_seconds": round(float(np.median(times)), 3),
            "runs": [round(t, 3) for t in times]}


def run_torch(args, layers_only: bool = False) -> dict:
    import torch
    from torch import nn

    from rnnlab import metrics
    from rnnlab.train import class_weight

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    config, d, prep = _prepared(args.copies)
    E = prep.E[: prep.trained]  # the rows training reads (the vector words: no text of the run holds them)
    batches = [(torch.from_numpy(b.tokens).long(), torch.from_numpy(b.lengths).long(),
                torch.from_numpy(b.labels).long()) for b in _plan(prep, config)]
    C = len(d.labels)
    from peers import torch_bigru  # beside this script

    model = torch_bigru(E, config.units, C)
    if layers_only:
        xs = [(model.embedding(ids).detach().requires_grad_(True), lengths) for ids, lengths, _ in batches]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for x, lengths in xs:
                packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                a, _ = model.gru(packed)
                (a.data * a.data).sum().backward()
            times.append(time.perf_counter() - start)
        return {"batches": len(xs), "epoch_seconds": round(float(np.median(times)), 3),
                "runs": [round(t, 3) for t in times]}
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weight(d["train"].labels, C, "balanced")))
    val_ids, val_lengths = (torch.from_numpy(a).long() for a in prep.val)
    val_ids[val_ids >= prep.trained] = 1  # as the quality peer: a word no training text holds is <unk>
    epochs, score = [], 0.0
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for ids, lengths, labels in batches:
            optim.zero_grad()
            loss_fn(model(ids, lengths), labels).backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optim.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(val_ids[i:i + 512], val_lengths[i:i + 512]).argmax(1)
                              for i in range(0, len(val_ids), 512)]).numpy()
        score = metrics.report(d["val"].labels, pred, d.labels, d.task)["score"]
        epochs.append(time.perf_counter() - start)
    n = len(d["train"])
    return {"tweets": n, "epoch_seconds": [round(e, 3) for e in epochs],
            "tweets_per_second": [round(n / e) for e in epochs], "val": round(score, 4)}


def _median_ms(f, n: int = 30) -> float:
    import jax

    jax.block_until_ready(f())
    times = []
    for _ in range(n):
        start = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 3)


def profile(task: str) -> dict:
    """Where a step and an epoch of `rnnlab train TASK` (the defaults) go: each piece jitted on its own and
    timed to completion (median of 30), on one full batch of each bucket's T."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from rnnlab import data, optim
    from rnnlab import train as tr
    from rnnlab.data import Vocabulary, embedding_matrix, load_vectors, tokenize
    from rnnlab.data.batches import bucket_edges, encode, make, plan
    from rnnlab.models import TextClassifier, pool

    out: dict = {"task": task, "pieces_ms": {}}
    start = time.perf_counter()
    config = tr.Config()
    d = tr.split_off_val(data.load(DATA / "tweeteval" / task, progress=False), config.val_fraction, config.seed)
    train, val = d["train"], d["val"]
    tokens = [tokenize(t) for t in train.texts]
    vocab = Vocabulary.build(tokens, config.min_freq, config.max_vocab)
    out["tokenize_and_vocabulary_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    E, _ = embedding_matrix(vocab, load_vectors(config.embeddings), seed=config.seed)
    out["glove_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    model = TextClassifier(config.model_config(len(vocab), len(d.labels), E.shape[1]), E, key=jax.random.key(0))
    out["model_init_s"] = round(time.perf_counter() - start, 3)
    params, static = eqx.partition((model,), (tr.trainable(model),))
    ids, lengths = vocab.encode_batch(tokens, config.maxlen)
    weight = tr.class_weight(train.labels, len(d.labels), config.class_weights)
    edges = bucket_edges(config.maxlen)
    batches = plan(lengths, config.batch_size, edges, np.random.default_rng([config.seed, 0]))
    out["V"], out["steps"] = len(vocab), len(batches)
    out["steps_per_T"] = {int(T): sum(1 for b in batches if b[0] == T) for T in edges}
    fixed = (static, tr.StepConfig.of(config), jnp.asarray(tr.schedule(config, len(batches) * config.epochs)),
             jax.random.key(0))
    box = [tr.init_state(params)]
    rnn_p, rnn_s = eqx.partition(model.rnn, eqx.is_inexact_array)

    def host(T, rows):
        b = make(ids, lengths, train.labels, T, rows, config.batch_size, weight)
        return jax.device_put((b.tokens, b.lengths, b.labels, b.weights))

    for T in edges:
        rows = next(r for t, r in batches if t == T and len(r) == config.batch_size)
        p = out["pieces_ms"][T] = {}
        first = time.perf_counter()
        box[0], loss = tr._train_step(fixed, box[0], *host(T, rows))
        jax.block_until_ready(loss)
        p["step_first_call"] = round((time.perf_counter() - first) * 1e3, 1)

        def step(T=T, rows=rows):
            box[0], loss = tr._train_step(fixed, box[0], *host(T, rows))
            return loss

        p["step"] = _median_ms(step)
        p["host_batch"] = _median_ms(lambda T=T, rows=rows: host(T, rows))
        tok, ln, lab, w = host(T, rows)
        x = jnp.asarray(E)[tok]

        @jax.jit
        def layers(rnn_p, x, ln=ln):
            def f(rnn_p, x):
                a, _ = eqx.combine(rnn_p, rnn_s)(x, ln)
                return (a * a).sum()
            return jax.grad(f, argnums=(0, 1))(rnn_p, x)

        p["layers_forward_backward"] = _median_ms(lambda x=x: layers(rnn_p, x))

        @jax.jit
        def lookup(E, g, tok=tok):
            rows, inverse = optim.unique_rows(tok, E.shape[0])
            return E[tok.reshape(-1)], rows, optim.row_gradients(g.reshape(-1, E.shape[1]), inverse)

        p["embedding_lookup_and_row_gradients"] = _median_ms(lambda x=x: lookup(jnp.asarray(E), x))
        a, _ = model.rnn(x, ln)

        @jax.jit
        def head(a, W, b, ln=ln, lab=lab, w=w):
            def f(a, W, b):
                logits = pool(a, ln, config.pooling, True) @ W.T + b
                ce = optax.softmax_cross_entropy_with_integer_labels(logits, lab)
                return (ce * w).sum() / w.sum()
            return jax.grad(f, argnums=(0, 1, 2))(a, W, b)

        p["pool_head_loss_forward_backward"] = _median_ms(lambda a=a: head(a, model.head.W_y, model.head.b_y))
        p["rest_of_step (dropout, clip, AdamW, moving average, dispatch)"] = round(
            p["step"] - p["layers_forward_backward"] - p["embedding_lookup_and_row_gradients"]
            - p["pool_head_loss_forward_backward"], 3)
    out["averaged_ms"] = _median_ms(lambda: tr.averaged(box[0]))
    encoded = encode(val.texts, vocab, config.maxlen)
    first = time.perf_counter()
    tr.evaluate((model,), vocab, val, d.labels, d.task, config.maxlen, encoded)
    out["evaluate_val_first_s"] = round(time.perf_counter() - first, 3)
    out["evaluate_val_ms"] = _median_ms(lambda: tr.evaluate((model,), vocab, val, d.labels, d.task, config.maxlen,
                                                            encoded)["score"], 5)
    start = time.perf_counter()
    for T, rows in batches:
        box[0], loss = tr._train_step(fixed, box[0], *host(T, rows))
    jax.block_until_ready(loss)
    out["epoch_of_steps_s"] = round(time.perf_counter() - start, 3)
    out["expected_from_pieces_s"] = round(sum(out["pieces_ms"][T]["step"] * n for T, n in out["steps_per_T"].items())
                                          / 1e3, 3)
    return out


RUNS = {"rnnlab": run_rnnlab, "rnnlab-layers": run_rnnlab_layers, "torch": run_torch,
        "torch-layers": lambda args: run_torch(args, layers_only=True)}


def _child(name: str, args, env: dict) -> dict:
    command = [sys.executable, __file__, "--one", name, "--copies", str(args.copies), "--epochs", str(args.epochs),
               "--repeats", str(args.repeats)]
    load = os.getloadavg()[0]
    child = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    if child.returncode != 0:
        raise SystemExit(f"{name} failed:\n{child.stderr[-3000:]}")
    row = json.loads(child.stdout.strip().splitlines()[-1])
    row["load_average"] = round((load + os.getloadavg()[0]) / 2, 1)
    return row


def write_data(d, root: Path) -> None:
    """`d` as a TweetEval folder: mapping.txt, then NAME_text.txt and NAME_labels.txt per split."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mapping.txt").write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(d.labels)))
    for name, split in d.splits.items():
        (root / f"{name}_text.txt").write_text("".join(" ".join(t.split()) + "\n" for t in split.texts))
        (root / f"{name}_labels.txt").write_text("".join(f"{y}\n" for y in split.labels))
    print(f"{root}: {', '.join(f'{n} {len(s)}' for n, s in d.splits.items())}, {len(d.labels)} labels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2, help="times the train splits are taken (default: 2)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the batches, layers alone (default: 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_speed.json")
    parser.add_argument("--profile", metavar="TASK", help="profile a step and an epoch of TASK (e.g. hate) instead")
    parser.add_argument("--write-data", type=Path, metavar="DIR",
                        help="write the set as a TweetEval folder (to time `rnnlab train DIR`) instead")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_data:
        write_data(dataset(args.copies), args.write_data)
        return
    if args.profile:
        print(json.dumps(profile(args.profile), indent=1))
        return
    if args.one:
        print(json.dumps(RUNS[args.one](args)))
        return
    table = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
             "copies": args.copies, "epochs": args.epochs, "runs": {}}
    with tempfile.TemporaryDirectory() as cache:
        env = {"RNNLAB_COMPILE_CACHE": cache}
        for name, key in [("rnnlab", "rnnlab (empty cache)"), ("rnnlab-layers", "rnnlab-layers"),
                          ("rnnlab", "rnnlab (cache from the run before)"), ("torch", "torch"),
                          ("torch-layers", "torch-layers")]:
            table["runs"][key] = row = _child(name, args, env)
            print(f"{key:36s} {json.dumps(row)}", flush=True)
    runs = table["runs"]
    layers = runs["rnnlab-layers"]["epoch_seconds"]
    last = runs["rnnlab (cache from the run before)"]["epoch_seconds"][-1]
    torch_last = runs["torch"]["epoch_seconds"][-1]
    table["ratios"] = {
        "rnnlab epoch / its layers alone": round(last / layers, 2),
        "torch epoch / its layers alone": round(torch_last / runs["torch-layers"]["epoch_seconds"], 2),
        "torch epoch / rnnlab epoch": round(torch_last / last, 2),
    }
    print(json.dumps(table["ratios"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
