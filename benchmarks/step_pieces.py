"""Where the training step's time goes: an epoch of `rnnlab train`'s compiled step on a task's batches (the
defaults: hate's 282 batches of 32), and the same batches through the step of variants that each leave one
piece out (the subword table H, E's row-sparse AdamW, the moving average), in turns; medians of 5 epochs.

    python benchmarks/step_pieces.py                     # JSON on stdout
    python benchmarks/step_pieces.py --task umsab/french --out /tmp/pieces.json
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from rnnlab import data
from rnnlab import train as tr
from rnnlab.data.batches import bucket_edges, make, plan

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--task", default="tweeteval/hate", help="a folder under ../shared/data (default: %(default)s)")
parser.add_argument("--rounds", type=int, default=5, help="epochs of each variant, in turns (default: %(default)s)")
parser.add_argument("--out", type=Path, help="write the JSON there too")
args = parser.parse_args()
ds = data.load(DATA / args.task, progress=False)
variants = [("defaults", {}), ("no subwords (subwords=0)", {"subwords": 0}),
            ("E frozen (no row-sparse AdamW on E)", {"freeze_embeddings": True}),
            ("no moving average (ema=0)", {"ema": 0.0}),
            ("no subwords, E frozen, no average", {"subwords": 0, "freeze_embeddings": True, "ema": 0.0})]
setups = {}
for name, over in variants:
    cfg = dataclasses.replace(tr.Config(), **over)
    prep = tr.prepare(cfg, ds)
    members, key = prep.start(cfg.seed, cfg.members)  # as fit: the rows training reads
    params, static = eqx.partition(members, tuple(tr.trainable(m) for m in members))
    ids, lengths = prep.train
    labels = prep.dataset["train"].labels
    batches = plan(lengths, cfg.batch_size, bucket_edges(cfg.maxlen), np.random.default_rng(0))
    fixed = (static, tr.StepConfig.of(cfg), jax.numpy.asarray(tr.schedule(cfg, len(batches))), key)
    weight = tr.class_weight(labels, len(prep.dataset.labels), cfg.class_weights)
    made = (make(ids, lengths, labels, *b, cfg.batch_size, weight) for b in batches)
    bs = [jax.device_put((b.tokens, b.lengths, b.labels, b.weights)) for b in made]
    state, loss = tr._train_step(fixed, tr.init_state(params), *bs[0])  # compiled before timing
    jax.block_until_ready(loss)
    setups[name] = [fixed, state, bs, []]
for _ in range(args.rounds):
    for setup in setups.values():
        fixed, state, bs, times = setup
        start = time.perf_counter()
        for b in bs:
            state, loss = tr._train_step(fixed, state, *b)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
        setup[1] = state


def summary(times: list[float], steps: int) -> dict:
    median = float(np.median(times))
    return {"epoch_of_steps_s": round(median, 3), "ms_per_step": round(median / steps * 1e3, 2),
            "runs": [round(x, 3) for x in times]}


steps = len(next(iter(setups.values()))[2])
out = {"task": args.task, "batches": steps, "load_average": os.getloadavg()[0],
       "variants": {name: summary(s[3], steps) for name, s in setups.items()}}
text = json.dumps(out, indent=1)
print(text)
if args.out:
    args.out.write_text(text + "\n")
