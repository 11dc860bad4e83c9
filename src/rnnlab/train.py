"""Training a `TextClassifier` on a `Dataset`: Optax AdamW, length buckets, early stopping, checkpoints.

    result = fit(Config(), rnnlab.data.load("../shared/data/tweeteval/emotion"), out_dir="runs/emotion")
    result.best_score     # the validation score (official metric) of the kept model

Each epoch shuffles with a generator seeded by (seed, epoch) and draws dropout keys from (seed, step), so a
fixed seed gives identical results, and a run resumed from a checkpoint continues the very same sequence
of batches. Checkpoints (`state.safetensors`) are written every `checkpoint_every` steps and at the end of
each epoch; the best model so far is kept by its validation score and restored at the end.

Under faults (docs/faults.md): options that make no sense and trainings too large for the memory are
refused before anything is allocated (`Config.validate`, `check_memory`); one process at a time trains a
run folder (`checkpoint.lock`); a loss or weights that turn NaN or inf stop the training at once, keeping
the last good checkpoint; `resume` continues only the run the folder holds, on the data it was trained on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from rnnlab import baseline, checkpoint, compile_cache, inference, metrics, optim
from rnnlab.data import subwords
from rnnlab.data.batches import bucket_edges, encode, make, plan, prefetch
from rnnlab.data.dataset import Dataset, Split
from rnnlab.data.embeddings import WordVectors, embedding_matrix, load_vectors
from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import Vocabulary
from rnnlab.inference import EVAL_BATCH
from rnnlab.layers import with_engine
from rnnlab.models import POOLINGS, ModelConfig, TextClassifier
from rnnlab.pretrain import pretrain


@dataclass
class Config:
    """Every choice of a training run. The defaults are the recommended configuration for tweets."""

    # text -> tokens
    maxlen: int = 64                 # T at most: longer texts are cut (99% of TweetEval tweets fit)
    min_freq: int = 1                # a training token seen fewer times is <unk>
    max_vocab: int = 50_000          # the training texts' tokens at most, <pad> and <unk> included
    embeddings: str | None = "glove-6b-50d"  # "glove-6b-50d", a word2vec/GloVe text file, or None
    vector_words: int = 100_000      # the first N words of the pretrained vectors join the vocabulary too
    k: int = 50                      # features of x_t when not set by the pretrained vectors
    freeze_embeddings: bool = False  # keep pretrained vectors fixed (else fine-tuned)
    embed_lr: float = 1.0            # the embedding's learning rate, relative to lr
    # model
    cell: str = "gru"
    units: int = 64                  # p, per direction
    layers: int = 1
    bidirectional: bool = True
    pooling: str = "max"             # last | mean | max over the valid steps
    dropout: float = 0.3             # between layers and before the head
    embed_dropout: float = 0.0       # on x_t
    subwords: int = 20_000           # rows of H, hashed character 3-5-grams added to x_t (0: none; data.subwords)
    pretrain_epochs: int = 0         # passes of next-word pretraining of E and the layer first (rnnlab.pretrain)
    # optimisation
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    clip: float = 1.0                # global gradient norm
    ema: float = 0.99                # evaluate and keep an exponential moving average of the weights (0: off)
    members: int = 1                 # an ensemble: models trained side by side, probabilities averaged
    warmup: float = 0.05             # fraction of all steps with a linear warm-up, then cosine decay
    class_weights: str = "balanced"  # balanced | none
    patience: int = 3                # epochs without a better validation score before stopping
    max_seconds: float | None = None  # stop (keeping the best model) after this much training time
    val_fraction: float = 0.1        # held out from train when the dataset has no val split
    seed: int = 0
    baseline: bool = True            # a run on disk also fits the TF-IDF + logistic regression floor (rnnlab.baseline)
    checkpoint_every: int = 100      # steps between mid-epoch checkpoints (with an out_dir)
    engine: str = "auto"             # where the layers run: auto | scan | fused (rnnlab.Recurrent's engine)

    def model_config(self, vocab_size: int, classes: int, k: int | None = None) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size, classes=classes, k=k or self.k, cell=self.cell, units=self.units,
            layers=self.layers, bidirectional=self.bidirectional, pooling=self.pooling, dropout=self.dropout,
            embed_dropout=self.embed_dropout, freeze_embeddings=self.freeze_embeddings,
            subword_buckets=self.subwords, subword_grams=subwords.MAX_GRAMS if self.subwords else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> Config:
        """self when every option makes sense; else a ValueError naming the first that does not as its
        command-line option, its value and the rule (`--lr nan: the peak learning rate must be ...`)."""
        from rnnlab.cells import CELLS

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: {rule}")

        def whole(name: str, least: int, what: str) -> None:
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= least, name, f"{what} must be a whole "
                 f"number >= {least}")

        def real(name: str, low: float | int, high: float | int, what: str, open_low: bool = False,
                 open_high: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
            span = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
            need(ok, name, f"{what} must be a finite number in {span}")

        whole("maxlen", 1, "T, the tokens kept per text,")
        whole("min_freq", 1, "the count a token needs to enter the vocabulary")
        whole("max_vocab", 3, "the vocabulary (<pad>, <unk> and at least one token)")
        whole("vector_words", 0, "the words taken from the pretrained vectors")
        whole("k", 1, "k, the features of x_t,")
        real("embed_lr", 0, math.inf, "the embedding's relative learning rate", open_high=True)
        need(isinstance(self.cell, str) and self.cell.lower() in CELLS, "cell", f"the cell is one of "
             f"{' | '.join(sorted(CELLS))}")
        whole("units", 1, "p, the units of a_t,")
        whole("layers", 1, "the layers")
        need(self.pooling in POOLINGS, "pooling", f"the pooling is one of {' | '.join(POOLINGS)}")
        real("dropout", 0, 1, "dropout (a fraction of units zeroed)", open_high=True)
        real("embed_dropout", 0, 1, "dropout on x_t (a fraction zeroed)", open_high=True)
        whole("subwords", 0, "the rows of the n-grams' table H (0: none)")
        whole("pretrain_epochs", 0, "the pretraining epochs")
        whole("epochs", 1, "the epochs")
        whole("batch_size", 1, "B, the texts per step,")
        real("lr", 0, math.inf, "the peak learning rate", open_low=True, open_high=True)
        real("weight_decay", 0, math.inf, "the weight decay", open_high=True)
        real("clip", 0, math.inf, "the gradient norm clipped to", open_low=True, open_high=True)
        real("ema", 0, 1, "the moving average's decay (0: off)", open_high=True)
        whole("members", 1, "the members of the ensemble")
        real("warmup", 0, 1, "the warm-up (a fraction of all steps)")
        need(self.class_weights in ("balanced", "none"), "class_weights", "the class weights are balanced or none")
        whole("patience", 1, "the epochs without a better score before stopping")
        if self.max_seconds is not None:
            real("max_seconds", 0, math.inf, "the time limit in seconds", open_low=True, open_high=True)
        real("val_fraction", 0, 1, "the share of train held out when there is no val split", open_low=True,
             open_high=True)
        whole("checkpoint_every", 0, "the steps between checkpoints (0: at the end of each epoch only)")
        need(self.engine in ("auto", "scan", "fused"), "engine", "the engine is one of auto | scan | fused")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class FitResult:
    """What `fit` gives back. best_score: the validation score (under `metric`) of the kept model."""

    best_score: float
    best_epoch: int
    metric: str
    members: tuple[TextClassifier, ...]
    vocab: Vocabulary
    labels: tuple[str, ...]
    history: list[dict] = field(default_factory=list)
    val: dict | None = None
    test: dict | None = None
    seconds: float = 0.0
    out_dir: Path | None = None
    baseline: dict | None = None     # the floor's scores (`rnnlab.baseline.floor_report`) when fitted
    trained_rows: int | None = None  # E's rows that training updated (the rest: `Prepared.extra`)

    @property
    def model(self) -> TextClassifier:
        """The first member (the only one unless `Config.members` > 1)."""
        return self.members[0]

    def run(self, config: Config, task: str) -> inference.Run:
        return inference.Run(self.members, config.to_dict(), self.vocab, self.labels, task, self.metric,
                              self.out_dir)


class TrainingDivergedError(ValueError):
    """The loss or the weights turned NaN or inf: training stopped, the run keeps its last good checkpoint."""


class RunFinishedError(ValueError):
    """`resume` of a run that is finished: there is nothing to continue."""


def data_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of a dataset's label names and every split's texts and labels: the same data, the same
    fingerprint, whatever files it was read from."""
    h = hashlib.sha256(json.dumps(list(dataset.labels)).encode())
    for name in sorted(dataset.splits):
        split = dataset.splits[name]
        h.update(f"\0{name}\0{len(split)}\0".encode())
        for text in split.texts:
            h.update(text.encode("utf-8", "surrogatepass") + b"\0")
        h.update(np.asarray(split.labels, "<i4").tobytes())
    return h.hexdigest()


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (MemAvailable), else the machine's total."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(n: float | int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


_GATES = {"elman": 1, "rnn": 1, "gru": 3, "lstm": 4}


def memory_estimate(config: Config, model_config: ModelConfig, texts: int, T: int) -> dict[str, int]:
    """Bytes a training needs at the least, by part: `weights`, the members' parameters six times over
    (the weights, their gradient, AdamW's two moments, the moving average and the best copy); `batch`, one
    step's x_t, a_t and gates kept for the backward pass, twice (B × T × (k + layers · directions · p ·
    (G + 3)) floats a member); `ids`, the token ids of `texts` texts (texts × maxlen int32)."""
    template = eqx.filter_eval_shape(lambda: TextClassifier(model_config, None, key=jax.random.key(0)))
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(template) if hasattr(x, "shape"))
    G = _GATES.get(model_config.cell.lower(), 3)
    per_step = model_config.k + model_config.layers * (2 if model_config.bidirectional else 1) * \
        model_config.units * (G + 3)
    return {"weights": config.members * 6 * 4 * params,
            "batch": config.members * 2 * 4 * config.batch_size * T * per_step,
            "ids": 4 * texts * config.maxlen}


def check_memory(config: Config, model_config: ModelConfig, texts: int, T: int) -> None:
    """Refuse, before allocating, a training whose `memory_estimate` exceeds the memory available."""
    need = memory_estimate(config, model_config, texts, T)
    have = available_memory()
    if sum(need.values()) > have:
        parts = ", ".join(f"{name} {_size(v)}" for name, v in need.items())
        raise ValueError(f"this training needs about {_size(sum(need.values()))} of memory ({parts}; "
                         f"--batch-size {config.batch_size}, --units {config.units}, --maxlen {config.maxlen}) and "
                         f"{_size(have)} is available: lower --batch-size, --units or --maxlen")


def _open_run(out: Path, config: Config, dataset: Dataset, fingerprint: str, resume: bool, exist_ok: bool,
              say: Callable[[str], None]) -> tuple[Config, dict | None, bool]:
    """(the config to train with, the run's config.json to resume from or None, whether its state
    exists), for a run folder whose lock this process holds; refuses a resume that would mix runs or data."""
    removed = checkpoint.remove_orphans(out)
    if removed:
        say(f"removed {len(removed)} temporary file(s) a killed write left in {out}")
    if not resume:
        if (out / checkpoint.CONFIG).is_file():
            if not exist_ok:
                raise checkpoint.RunError(f"{out} already holds a run: pass --resume to continue it, "
                                          "or choose another --out")
            for name in (checkpoint.METRICS, checkpoint.STATE, checkpoint.MODEL):
                (out / name).unlink(missing_ok=True)
        return config, None, False
    if not (out / checkpoint.CONFIG).is_file():
        raise checkpoint.RunError(f"{out}: no run to resume (no {checkpoint.CONFIG}); leave out --resume to "
                                  "start one")
    info = checkpoint.read_info(out)
    if (out / checkpoint.METRICS).is_file():
        done = checkpoint.read_json(out / checkpoint.METRICS)
        best = f"best epoch {done.get('best_epoch')}" if isinstance(done, dict) else "finished"
        raise RunFinishedError(f"{out} is finished ({best}): nothing to resume")
    if tuple(info["labels"]) != tuple(dataset.labels):
        raise checkpoint.RunError(f"{out} was trained on the labels {', '.join(info['labels'])}; "
                                  f"{dataset.source or dataset.task} has {', '.join(dataset.labels)}: --resume "
                                  "continues a run on the data it was trained on")
    recorded = info.get("data")
    if isinstance(recorded, dict) and recorded.get("fingerprint") != fingerprint:
        raise checkpoint.RunError(
            f"{dataset.source or dataset.task} is not the data {out} was trained on "
            f"({recorded.get('source') or 'unnamed'}): its texts or labels differ (fingerprint "
            f"{fingerprint[:12]} against {str(recorded.get('fingerprint'))[:12]}); --resume continues a run "
            "on the data it was trained on")
    try:
        own = Config.from_dict(info["config"]).validate()
    except (TypeError, ValueError) as e:
        raise checkpoint.RunError(f"{out / checkpoint.CONFIG}: {e}") from None
    differ = [f"{f.name} {getattr(own, f.name)!r} (not {getattr(config, f.name)!r})" for f in fields(Config)
              if getattr(own, f.name) != getattr(config, f.name)]
    if differ:
        say(f"--resume continues with the run's own settings: {', '.join(differ)}")
    if not (out / checkpoint.STATE).is_file():
        say(f"{out} has no checkpoint yet: training it again from the start, with its own settings")
        return own, None, False
    return own, info, True


# An epoch callback gets (epoch, validation score, history so far); returning True stops training.
# Exceptions it raises (e.g. optuna.TrialPruned) propagate out of `fit`.
EpochCallback = Callable[[int, float, list[dict]], bool | None]


def class_weight(labels: Int[np.ndarray, " N"], C: int, how: str) -> Float[np.ndarray, " C"]:
    """Per-class loss weights: `balanced` gives class c the weight N / (C · N_c); `none` gives ones."""
    if how == "none":
        return np.ones(C, np.float32)
    if how != "balanced":
        raise ValueError(f"unknown class_weights {how!r}: use balanced or none")
    counts = np.bincount(labels, minlength=C).astype(np.float64)
    return np.where(counts > 0, len(labels) / (C * np.maximum(counts, 1)), 0.0).astype(np.float32)


def split_off_val(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """The dataset itself when it has a val split; else train cut in two (a seeded, stratified draw)."""
    if "val" in dataset:
        return dataset
    train = dataset["train"]
    rng = np.random.default_rng([seed, 7])
    val_rows = []
    for c in np.unique(train.labels):
        rows = rng.permutation(np.flatnonzero(train.labels == c))
        val_rows.extend(rows[: max(1, round(fraction * len(rows)))] if len(rows) > 1 else [])
    is_val = np.zeros(len(train), bool)
    is_val[val_rows] = True
    pick = lambda mask: Split([t for t, m in zip(train.texts, mask, strict=True) if m], train.labels[mask],  # noqa: E731
                              train.source)
    splits = dict(dataset.splits, train=pick(~is_val), val=pick(is_val))
    return Dataset(dataset.task, dataset.labels, splits, dataset.source)


def trainable(model: TextClassifier) -> TextClassifier:
    """A filter tree: True for the arrays the optimiser updates (all but E when embeddings are frozen)."""
    spec = jax.tree.map(eqx.is_inexact_array, model)
    if model.config.freeze_embeddings:
        spec = eqx.tree_at(lambda m: m.E, spec, False)
    return spec


def schedule(config: Config, total_steps: int) -> Float[np.ndarray, " S"]:
    """The learning rate of each of the run's steps: a linear warm-up over `warmup` of them, then cosine
    decay to 5 % of lr; S = total_steps rounded up to a power of two (the last rate repeated). Given to the
    step as an array, so that one compiled step serves every run of the same shapes and configuration."""
    warmup = max(1, int(config.warmup * total_steps))
    rate = optax.warmup_cosine_decay_schedule(
        0.0, config.lr, warmup, max(total_steps, warmup + 1), end_value=config.lr * 0.05)
    size = 1 << max(total_steps - 1, 0).bit_length()  # a power of two: runs of other lengths share the step
    steps = jax.device_put(np.minimum(np.arange(size, dtype=np.int32), max(total_steps - 1, 0)))
    # run op by op, not under jit: XLA's fusion of the schedule's arithmetic would change the rates' last bits
    return np.asarray(jax.vmap(rate)(steps), np.float32)


class StepConfig(NamedTuple):
    """What the compiled step depends on besides shapes (hashable: the step is compiled once per value)."""

    hyper: optim.Hyper
    clip: float       # global gradient norm of each member
    embed_lr: float   # E's rate relative to lr
    ema: float        # the moving average's decay (0: off)

    @classmethod
    def of(cls, config: Config) -> StepConfig:
        return cls(optim.Hyper(weight_decay=config.weight_decay), config.clip, config.embed_lr, config.ema)


class TrainState(NamedTuple):
    """params, ema (the moving average; E's rows lazily, see `rnnlab.optim`), adam, ema_state."""

    params: tuple
    ema: tuple
    adam: optim.AdamWState
    ema_state: optim.EMAState


def _E(tree):
    return tree.E


def _no_E(tree):
    return eqx.tree_at(_E, tree, None) if tree.E is not None else tree


@eqx.filter_jit
def init_state(params: tuple) -> TrainState:
    """Zero moments; the average starts at the weights. Copies of `params`: the step donates its buffers.
    One compiled program for the whole tree."""
    return TrainState(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, params), optim.adamw_init(params),
                      optim.ema_init(tuple(p.E for p in params)))


def _loss(models, tokens, lengths, labels, weights, key):
    """The members' mean class-weighted cross-entropy; tokens: each member's (B, T) ids."""
    total = 0.0
    for i, (model, toks) in enumerate(zip(models, tokens, strict=True)):
        logits = model(toks, lengths, key=jax.random.fold_in(key, i))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        total = total + (ce * weights).sum() / jnp.maximum(weights.sum(), 1e-9)
    return total / len(models)


def _update_member(p, e, g, m, v, row_log, log_decay, rows, lr, count, d, cfg: StepConfig):
    """AdamW and the moving average for one member whose clipped gradient is g; E (when trained) row by
    row on `rows`, g.E holding those rows' gradients. Returns (p, e, m, v, row_log) after the step."""
    flat_p, treedef = jax.tree.flatten(_no_E(p))
    flat_g, flat_m, flat_v, flat_e = (jax.tree.leaves(_no_E(t)) for t in (g, m, v, e))
    out = [optim.adamw_dense(*leaf, lr, count, cfg.hyper) for leaf in zip(flat_p, flat_g, flat_m, flat_v, strict=True)]
    p2, m2, v2 = (jax.tree.unflatten(treedef, [o[j] for o in out]) for j in range(3))
    e2 = jax.tree.unflatten(treedef, [optim.ema_dense(el, o[0], d) if cfg.ema > 0 else el
                                      for el, o in zip(flat_e, out, strict=True)])
    if p.E is None:
        return p2, e2, m2, v2, row_log
    E, mE, vE = optim.adamw_rows(p.E, m.E, v.E, rows, g.E, lr, count, cfg.hyper, cfg.embed_lr)
    eE = e.E
    if cfg.ema > 0:
        eE, row_log = optim.ema_rows(e.E, row_log, log_decay, p.E, E, rows, d)
    put = lambda tree, x: eqx.tree_at(_E, tree, x, is_leaf=lambda y: y is None)  # noqa: E731
    return put(p2, E), put(e2, eE), put(m2, mE), put(v2, vE), row_log


def _train_step(fixed, state: TrainState, tokens, lengths, labels, weights):
    """One AdamW step for each member on its class-weighted cross-entropy, each member's gradient clipped to
    global norm `clip`, and the moving average stepped with d = `optim.ema_decay`. fixed = (static,
    StepConfig, rates (S,), key), not donated; state's buffers are donated (updated in place). E's
    gradient is taken through its n = B·T lookups x = E[tokens] (n, k), summed per distinct row, and only
    those rows are updated (`rnnlab.optim`). Returns the state after the step and the members' mean loss.
    One compiled program per shape, StepConfig and static structure (`_step_for`)."""
    static, cfg, rates, key = fixed
    step = _step_for(static, cfg)
    return step.fn(state, rates, key, step.arrays, tokens, lengths, labels, weights)


class _Step(NamedTuple):
    static: tuple       # the members' static parts this entry was made for (compared by identity)
    cfg: StepConfig
    arrays: tuple       # the arrays among them (the n-grams' table): inputs of the program, not constants
    fn: Callable


_STEPS: dict = {}       # (static's structure and non-array leaves, StepConfig) -> the jitted step
_LAST: list = [None]    # the last _Step: the loop asks for the same one at every step


def _step_for(static: tuple, cfg: StepConfig) -> _Step:
    """The jitted step for these static parts: found by identity at every step of a run (no pytree hashed
    per call, as a filtered jit would), by value once per run."""
    last = _LAST[0]
    if last is not None and last.static is static and last.cfg == cfg:
        return last
    arrays, rest = eqx.partition(static, eqx.is_array)
    leaves, treedef = jax.tree.flatten(rest)
    key = (treedef, tuple(leaves), cfg)
    fn = _STEPS.get(key)
    if fn is None:
        fn = _STEPS[key] = jax.jit(functools.partial(_step, rest, cfg), donate_argnums=0)
    _LAST[0] = _Step(static, cfg, arrays, fn)
    return _LAST[0]


def _step(rest, cfg: StepConfig, state: TrainState, rates, key, arrays, tokens, lengths, labels, weights):
    """`_train_step`'s program: the members' static parts are `rest` (closed over) and `arrays`."""
    static = eqx.combine(arrays, rest)
    params, ema, adam, ema_state = state
    count = adam.count
    lr = rates[jnp.minimum(count, rates.shape[0] - 1)]
    key = jax.random.fold_in(key, count + 1)
    B, T = tokens.shape
    tables = [p.E for p in params if p.E is not None]
    rows, inverse = optim.unique_rows(tokens, tables[0].shape[0]) if tables else (None, None)
    by_position = jnp.arange(B * T, dtype=tokens.dtype).reshape(B, T)
    # a trained E enters as its lookups x = E[tokens], read back by position: the gradient is that of x
    looked = tuple(p if p.E is None else eqx.tree_at(_E, p, p.E[tokens.reshape(-1)]) for p in params)

    def loss_fn(looked):
        models = [eqx.combine(p, st) for p, st in zip(looked, static, strict=True)]
        models = [m if m.grams is None or p.E is None else  # each position's n-grams, as E's rows are
                  eqx.tree_at(lambda m: m.grams, m, m.grams[tokens.reshape(-1)])
                  for m, p in zip(models, looked, strict=True)]
        return _loss(models, [tokens if p.E is None else by_position for p in looked], lengths, labels, weights,
                     key)

    loss, grads = eqx.filter_value_and_grad(loss_fn)(looked)
    grads = tuple(g if g.E is None else eqx.tree_at(_E, g, optim.row_gradients(g.E, inverse)) for g in grads)
    grads = tuple(jax.tree.map(lambda x, c=optim.clip_scale(optim.global_norm(g), cfg.clip): x * c, g)
                  for g in grads)
    d = optim.ema_decay(cfg.ema, count)
    new = [_update_member(*member, ema_state.log_decay, rows, lr, count, d, cfg)
           for member in zip(params, ema, grads, adam.m, adam.v, ema_state.row_log_decay, strict=True)]
    p2, e2, m2, v2, logs = (tuple(x) for x in zip(*new, strict=True))
    log_decay = ema_state.log_decay + jnp.log(d) if cfg.ema > 0 else ema_state.log_decay
    return TrainState(p2, e2, optim.AdamWState(count + 1, m2, v2), optim.EMAState(log_decay, logs)), loss


@eqx.filter_jit
def averaged(state: TrainState, ema_on: bool = True) -> tuple:
    """The weights to evaluate and keep: the moving average (every row of E brought up to date), or the
    weights themselves when the average is off. Fresh buffers, safe from the step's donation."""
    if not ema_on:
        return jax.tree.map(jnp.copy, state.params)
    out = []
    for p, e, row_log in zip(state.params, state.ema, state.ema_state.row_log_decay, strict=True):
        if p.E is not None:
            e = eqx.tree_at(_E, e, optim.ema_rows_read(e.E, row_log, state.ema_state.log_decay, p.E))
        out.append(jax.tree.map(jnp.copy, e))
    return tuple(out)


evaluate = inference.evaluate  # one split's report from the members' probabilities (kept here by name)


def predict_proba(members: tuple[TextClassifier, ...] | TextClassifier, ids: Int[np.ndarray, "N T"],
                  lengths: Int[np.ndarray, " N"], batch_size: int = EVAL_BATCH) -> Float[np.ndarray, "N C"]:
    """The members' mean probabilities (N, C), in batches of one shape (batch_size, T) whatever N is
    (`inference.predict_proba` without buckets)."""
    return inference.predict_proba(members, ids, lengths, batch_size, buckets=False)


class _Lines:
    """Progress as plain lines on stderr, each flushed: one per finished epoch (a log, not a terminal)."""

    def __init__(self):
        self.tasks: list[tuple[str, int]] = []

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: int, info: str = "", completed: int = 0) -> int:
        self.tasks.append((description, total))
        return len(self.tasks) - 1

    def update(self, task: int, advance: int | None = None, completed: int | None = None, info: str = "") -> None:
        description, total = self.tasks[task]
        if completed is not None and completed >= total:
            print(f"{description}  {info}", file=sys.stderr, flush=True)


def _progress(enabled: bool):
    """Rich progress bars on a terminal (stderr), plain lines elsewhere, nothing when not enabled."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if enabled and not sys.stderr.isatty():
        return _Lines()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=False,
                    console=Console(stderr=True))


def fit(
    config: Config,
    dataset: Dataset,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    callback: EpochCallback | None = None,
    resume: bool = False,
    evaluate_test: bool = True,
    keep_state: bool = False,
    exist_ok: bool = True,
    say: Callable[[str], None] | None = None,
) -> FitResult:
    """Train on dataset["train"], select by dataset["val"] (the official metric), report val and test.

    out_dir: where to write the run (config.json, model.safetensors, state.safetensors, metrics.json),
    locked for the whole training; None keeps everything in memory. resume: continue the run in out_dir
    from its state.safetensors, with its own settings, on the data it was trained on (RunFinishedError
    when it is finished). exist_ok=False refuses an out_dir that already holds a run (unless resuming).
    keep_state: keep state.safetensors when the run finishes (else removed). callback(epoch, val_score,
    history) is called after every epoch; True from it stops training. say(line): where notices go (where
    a resume starts, settings it keeps); printed to stderr by default.
    Raises ValueError for options that make no sense and TrainingDivergedError for a non-finite loss.
    """
    config.validate()
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    if out_dir is None:
        return _fit(config, dataset, None, progress, callback, False, evaluate_test, True, True, say)
    with checkpoint.lock(out_dir):
        return _fit(config, dataset, Path(out_dir), progress, callback, resume, evaluate_test, keep_state,
                    exist_ok, say)


def vocabulary(config: Config, tokenized: list[list[str]]) -> tuple[Vocabulary, WordVectors | None, int]:
    """The vocabulary a training builds from its training texts' tokens (`min_freq`, `max_vocab`), extended
    by those of the first `vector_words` words of the pretrained vectors that no training text holds; those
    vectors (None without); and how many of its first rows the training texts read (`trained_rows`)."""
    vocab = Vocabulary.build(tokenized, config.min_freq, config.max_vocab)
    trained = len(vocab)
    if not config.embeddings:
        return vocab, None, trained
    wv = load_vectors(config.embeddings)
    if config.vector_words:
        held = {t for text in tokenized for t in text}
        vocab = vocab.extended(w for w in wv.words[: config.vector_words] if w not in held)
    return vocab, wv, trained


def trained_rows(config: Config, tokenized: list[list[str]]) -> int:
    """The rows of E the training texts read (the vocabulary `Vocabulary.build` gives them): the first ones
    of `vocabulary(...)`; the rest, the vector words, are read by other texts only."""
    return len(Vocabulary.build(tokenized, config.min_freq, config.max_vocab))


def gram_table(vocab: Vocabulary, trained: int, wv: WordVectors | None, vector_words: int, buckets: int,
               G: int) -> Int[np.ndarray, "V G"]:
    """`subwords.table` of the whole vocabulary: the training words' n-grams hashed here, the vector words'
    rows taken from the table of the vectors' first `vector_words` words, which is cached on disk
    (`subwords.cached_table`) because every training on any data reads the same list."""
    extra = vocab.tokens[trained:]
    if not extra:
        return subwords.table(vocab.tokens, buckets, G)
    at = [-1 if wv is None else wv.index.get(w, -1) for w in extra]
    if min(at) < 0 or max(at) >= vector_words:  # not the vectors' first words (never, as `vocabulary` builds)
        return subwords.table(vocab.tokens, buckets, G)
    first = subwords.cached_table(wv.words[:vector_words], buckets, G)
    return np.concatenate([subwords.table(vocab.tokens[:trained], buckets, G), first[np.asarray(at)]])


@dataclass
class Prepared:
    """What a training reads besides its weights. dataset: with its val split (`split_off_val`); E (V, k):
    the pretrained start of E (None: random, or a resume's own from its state); grams (V, G): each token's
    rows of H (None without subwords); train, val: (ids (N, maxlen), lengths (N,)); T: the bucket the
    longest training text falls in; metric: the task's official metric.

    trained: the rows of E that training updates, the first ones (the training vocabulary). The rest are
    the pretrained vectors' words that no training text holds (`vector_words`): no step reads or changes
    them, so the members train without them and `complete` appends them, E's rows as `extra` (the vectors
    themselves, read again from the vectors' file on a resume) and their n-grams' rows."""

    dataset: Dataset
    vocab: Vocabulary
    model_config: ModelConfig
    E: Float[np.ndarray, "V k"] | None
    grams: Int[np.ndarray, "V G"] | None
    train: tuple[Int[np.ndarray, "N T"], Int[np.ndarray, " N"]]
    val: tuple[Int[np.ndarray, "M T"], Int[np.ndarray, " M"]]
    T: int
    metric: str
    trained: int = 0
    extra: Float[np.ndarray, "X k"] | None = None

    @property
    def trained_config(self) -> ModelConfig:
        """The members' config while they train: V = `trained` rows."""
        return replace(self.model_config, vocab_size=self.trained)

    def start(self, seed: int, members: int, engine: str = "auto") -> tuple[tuple[TextClassifier, ...], PRNGKeyArray]:
        """`init_members` for training: the members over the first `trained` rows."""
        t = self.trained
        return init_members(self.trained_config, None if self.E is None else self.E[:t],
                            None if self.grams is None else self.grams[:t], seed, members, engine)

    @functools.cached_property
    def _rows_left_out(self) -> tuple[Array, Array | None]:
        """E's and the gram table's rows left out of training, on the device once (each evaluation reads them)."""
        return jnp.asarray(self.extra), None if self.grams is None else jnp.asarray(self.grams[self.trained:])

    def complete(self, members: tuple[TextClassifier, ...]) -> tuple[TextClassifier, ...]:
        """The trained members as the run keeps them: with the rows left out of training appended."""
        if self.extra is None:
            return members
        return tuple(m.with_rows(*self._rows_left_out) for m in members)


def prepare(config: Config, dataset: Dataset, info: dict | None = None) -> Prepared:
    """The vocabulary, E's start, H's gram table, the model's config and the encoded texts of a training of
    `config` on `dataset`, each text tokenised once; a training too large for the memory is refused
    (`check_memory`) before its texts are encoded. info: the config.json of a run being resumed (its own
    vocabulary and model config; E then comes from its state, but for the rows left out of training and a
    frozen E, which come from the vectors again)."""
    dataset = split_off_val(dataset, config.val_fraction, config.seed)
    train, val = dataset["train"], dataset["val"]
    tokenized = [tokenize(t) for t in train.texts]
    longest = max((len(t) for t in tokenized), default=1)
    T = min(config.maxlen, -(-longest // 32) * 32)   # the bucket the longest text falls in
    if info is not None:
        trained = trained_rows(config, tokenized)
        vocab, model_config, E = Vocabulary(info["vocab"]), ModelConfig(**info["model"]), None
        frozen = bool(config.embeddings) and config.freeze_embeddings
        wv = load_vectors(config.embeddings) if config.embeddings and (len(vocab) > trained or frozen) else None
        if frozen:  # a frozen E is no part of the state: the vectors again
            E = embedding_matrix(vocab, wv, seed=config.seed)[0]
    else:
        vocab, wv, trained = vocabulary(config, tokenized)
        E = embedding_matrix(vocab, wv, seed=config.seed)[0] if wv is not None else None
        model_config = config.model_config(len(vocab), len(dataset.labels), wv.k if wv is not None else None)
        check_memory(config, model_config, sum(len(s) for s in dataset.splits.values()), T)  # before the ids
    ids, lengths = vocab.encode_batch(tokenized, config.maxlen)
    grams = (gram_table(vocab, trained, wv, config.vector_words, model_config.subword_buckets,
                        model_config.subword_grams) if model_config.subword_buckets else None)
    extra = None
    if len(vocab) > trained and wv is not None:
        extra = (E if E is not None else embedding_matrix(vocab, wv, seed=config.seed)[0])[trained:]
    else:
        trained = len(vocab)
    return Prepared(dataset, vocab, model_config, E, grams, (ids, lengths), encode(val.texts, vocab, config.maxlen),
                    T, metrics.official_metric(dataset.task), trained, extra)


def init_members(model_config: ModelConfig, E: Float[np.ndarray, "V k"] | None, grams: Int[np.ndarray, "V G"] | None,
                 seed: int, members: int, engine: str = "auto") -> tuple[tuple[TextClassifier, ...], PRNGKeyArray]:
    """(the members at their random start, the run's key): member 0 drawn from fold_in(key(seed), 0), member
    i from fold_in(key, 1000 + i). With E given, every member's random weights are drawn in one compiled
    program and E and grams set after it; without, the members are built op by op: the model draws E as
    normal · 0.4, a product XLA fuses into the draw under jit, which changes E's last bits."""
    def build(seed):
        key = jax.random.key(seed)
        keys = [jax.random.fold_in(key, 0), *(jax.random.fold_in(key, 1000 + i) for i in range(1, members))]
        # with E given, zeros stand in for it in the program (E is set after), so no (V, k) draw is made
        start = None if E is None else jnp.zeros((model_config.vocab_size, model_config.k), jnp.float32)
        return tuple(TextClassifier(model_config, start, key=k, grams=None if E is not None else grams)
                     for k in keys), key

    if E is None:
        built, key = build(seed)
    else:
        if tuple(E.shape) != (model_config.vocab_size, model_config.k):
            raise ValueError(f"E must be (V={model_config.vocab_size}, k={model_config.k}); got {tuple(E.shape)}")
        built, key = eqx.filter_jit(build)(np.asarray(seed, np.int32))  # traced: the draws stay run-time work
        E = jax.device_put(np.asarray(E, np.float32))
        built = tuple(eqx.tree_at(lambda m: m.E, m, E) for m in built)
        if grams is not None and model_config.subword_buckets:
            table = jax.device_put(np.asarray(grams, np.int32))
            built = tuple(eqx.tree_at(lambda m: m.grams, m, table) for m in built)
    return tuple(with_engine(m, engine) for m in built), key


def _all_finite(tree) -> bool:
    """Whether every float of every array in `tree` is finite, read where the arrays are (on the CPU, in
    place): no program to compile for a check made once per checkpoint."""
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x))


@dataclass
class TrainingState:
    """All a training holds that a resume needs: the step's state (weights, moving average, AdamW's moments
    and count; the buffers the step donates), the best weights so far, and the loop's position. Saved whole
    as state.safetensors (`to_arrays` under `params`, `best`, `ema`, `opt`; `meta` as its metadata)."""

    step: TrainState
    best: tuple
    epoch: int = 0                 # epochs finished
    step_in_epoch: int = 0         # steps of the epoch in progress done
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0            # epochs since the best
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0           # training seconds before this session
    losses: list = field(default_factory=list)  # the losses of the epoch in progress, so far
    best_report: dict | None = None  # val's report of the best weights, when this session evaluated them (not saved)
    model_written: int | None = None  # the epoch whose weights this session wrote to model.safetensors (not saved)

    @classmethod
    def start(cls, params: tuple) -> TrainingState:
        """Step 0: zero moments, the average and the best at the weights."""
        return cls(init_state(params), params)

    def to_arrays(self) -> dict[str, np.ndarray]:
        s = self.step
        return {**checkpoint.tree_arrays(s.params, "params"), **checkpoint.tree_arrays(self.best, "best"),
                **checkpoint.tree_arrays(s.ema, "ema"), **checkpoint.tree_arrays((s.adam, s.ema_state), "opt")}

    def meta(self, elapsed: float | None = None) -> dict:
        """The position, as JSON; elapsed: the training seconds so far (else those before this session)."""
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "best_score": None if self.best_score == -math.inf else self.best_score,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "history": list(self.history),
                "elapsed": self.elapsed if elapsed is None else elapsed,
                "epoch_losses": [float(v) for v in jax.device_get(self.losses)] if self.step_in_epoch else []}

    @classmethod
    def from_arrays(cls, template: TrainingState, arrays: dict[str, np.ndarray], meta: dict,
                    source: str = "") -> TrainingState:
        """The state `to_arrays` and `meta` describe, its trees shaped as `template`'s (names, shapes and
        dtypes checked by `checkpoint.fill_tree`, one line naming `source` where they differ)."""
        t = template.step
        params = checkpoint.fill_tree(t.params, arrays, "params", source)
        best = checkpoint.fill_tree(t.params, arrays, "best", source)
        ema = checkpoint.fill_tree(t.params, arrays, "ema", source)
        adam, ema_state = checkpoint.fill_tree((t.adam, t.ema_state), arrays, "opt", source)
        best_score = -math.inf if meta["best_score"] is None else meta["best_score"]
        return cls(TrainState(params, ema, adam, ema_state), best, meta["epoch"], meta["step_in_epoch"],
                   meta["global_step"], best_score, meta["best_epoch"], meta["bad_epochs"], meta["history"],
                   meta["elapsed"], list(meta.get("epoch_losses", [])))


def _fit(config: Config, dataset: Dataset, out_dir: Path | None, progress: bool, callback: EpochCallback | None,
         resume: bool, evaluate_test: bool, keep_state: bool, exist_ok: bool, say: Callable[[str], None],
         ) -> FitResult:
    """`fit`'s body, with out_dir locked: prepare, start or resume the state, loop, evaluate and write."""
    start = time.perf_counter()
    compile_cache.enable()
    fingerprint = data_fingerprint(dataset)
    if len(dataset.labels) > len(dataset["train"]):
        raise ValueError(f"{dataset.source or dataset.task}: {len(dataset.labels)} labels for "
                         f"{len(dataset['train'])} training texts: a label set larger than the training data "
                         "cannot be learned (is the label column the right one?)")
    out = out_dir
    state_path = out / checkpoint.STATE if out is not None else None
    info, resuming = None, False
    if out is not None:
        config, info, resuming = _open_run(out, config, dataset, fingerprint, resume, exist_ok, say)
    # prepared with the config the run trains with: a resume holds out the rows its run held out
    prep = prepare(config, dataset, info if resuming else None)
    dataset, labels, metric = prep.dataset, prep.dataset.labels, prep.metric
    arrays, meta = checkpoint.read_state(state_path) if resuming else (None, None)
    if arrays is not None and arrays.get("params[0].E", np.zeros((0, 0))).shape[0] == len(prep.vocab):
        prep = replace(prep, trained=len(prep.vocab), extra=None)  # a run that trains every row (made so)
    members, key = prep.start(config.seed, config.members, config.engine)
    ids, lengths = prep.train
    if config.pretrain_epochs and not resuming:
        members = tuple(pretrain(m, ids, lengths, epochs=config.pretrain_epochs, lr=config.lr,
                                 batch_size=config.batch_size, clip=config.clip, seed=config.seed + i)[0]
                        for i, m in enumerate(members))
    params, static = eqx.partition(members, tuple(trainable(m) for m in members))
    if resuming:
        template = TrainingState(eqx.filter_eval_shape(init_state, params), params)   # shapes alone
        state = TrainingState.from_arrays(template, arrays, meta, str(state_path))
        steps_per_epoch = len(plan(lengths, config.batch_size, bucket_edges(config.maxlen), None))
        say(f"resuming {out} at epoch {state.epoch + 1} of {config.epochs}, step {state.step_in_epoch} of "
            f"{steps_per_epoch} ({state.global_step} steps done)")
    else:
        state = TrainingState.start(params)
    if not resuming and out is not None:
        checkpoint.save_config(out, prep.model_config, len(members), config.to_dict(), prep.vocab, labels,
                               dataset.task, metric, {"source": dataset.source, "fingerprint": fingerprint})

    state = _loop(config, prep, state, static, key, out, keep_state, callback, progress)

    members = prep.complete(eqx.combine(state.best, static))
    result = FitResult(state.best_score, state.best_epoch, metric, members, prep.vocab, labels, state.history,
                       out_dir=out, seconds=state.elapsed, trained_rows=prep.trained)
    result.val = state.best_report or evaluate(members, prep.vocab, dataset["val"], labels, dataset.task,
                                               config.maxlen, prep.val)
    if evaluate_test and "test" in dataset:
        result.test = evaluate(members, prep.vocab, dataset["test"], labels, dataset.task, config.maxlen)
    if config.baseline and out is not None:  # runs on disk (a tuning trial in memory skips it)
        result.baseline = baseline.floor_report(dataset["train"], dataset["val"],
                                                dataset["test"] if result.test is not None else None,
                                                labels, dataset.task)
    if out is not None:
        if state.model_written != state.best_epoch:  # else the loop wrote these very weights
            checkpoint.save_model(out / checkpoint.MODEL, members, state.best_epoch)
        checkpoint.write_json(out / checkpoint.METRICS, {
            "task": dataset.task, "metric": metric, "best_epoch": state.best_epoch,
            "val": {metric: result.val["score"], **result.val},
            "test": None if result.test is None else {metric: result.test["score"], **result.test},
            "history": state.history, "train_seconds": result.seconds, "baseline": result.baseline,
            "wall_seconds": time.perf_counter() - start,
        })
        if not keep_state:
            state_path.unlink(missing_ok=True)
            checkpoint.fsync_dir(out)
    return result


def _loop(config: Config, prep: Prepared, state: TrainingState, static: tuple, key: PRNGKeyArray, out: Path | None,
          keep_state: bool, callback: EpochCallback | None, progress: bool) -> TrainingState:
    """Epochs of steps from `state` on until the last epoch, early stopping, the time limit or the callback:
    each epoch evaluated on val, the best kept (model.safetensors in `out`), the state saved every
    `checkpoint_every` steps and after each epoch but the run's last (unless `keep_state`). Returns the
    state at the end, its elapsed the whole training's seconds."""
    dataset, labels = prep.dataset, prep.dataset.labels
    train = dataset["train"]
    ids, lengths = prep.train
    state_path = out / checkpoint.STATE if out is not None else None
    edges = bucket_edges(config.maxlen)
    weight = class_weight(train.labels, len(labels), config.class_weights)
    steps_per_epoch = len(plan(lengths, config.batch_size, edges, None))
    rates = schedule(config, steps_per_epoch * config.epochs)
    fixed = (static, StepConfig.of(config), jax.device_put(rates), key)
    last_saved = state.global_step   # the step of the checkpoint on disk (0: none)
    session_start = time.perf_counter()

    def check_finite():
        """Stop with TrainingDivergedError at the first step of this epoch whose loss is NaN or inf, or when
        the weights are: nothing of that step is written, the run keeps its last good checkpoint."""
        values = np.asarray([float(v) for v in jax.device_get(state.losses)], np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size == 0 and _all_finite(state.step.params):
            return
        i = int(bad[0]) if bad.size else len(values) - 1
        what = f"the training loss became {values[i]}" if bad.size else "the weights became NaN or inf"
        kept = ((f"; {out} keeps its last good checkpoint (step {last_saved})" if last_saved else
                 f"; {out} has no checkpoint yet")
                + (f" and its best model (epoch {state.best_epoch})" if state.best_epoch > 0 else "")
                ) if out is not None else ""
        raise TrainingDivergedError(
            f"{what} at step {state.global_step - len(values) + i + 1} (epoch {state.epoch + 1}, step {i + 1} of "
            f"{steps_per_epoch}): training stopped{kept}; lower --lr or --clip, or check the data and "
            "the embeddings")

    def save_state():
        nonlocal last_saved
        check_finite()
        if state_path is None:
            return
        seconds = state.elapsed + time.perf_counter() - session_start
        writer.save_arrays(state_path, state.to_arrays(), state.meta(seconds))
        last_saved = state.global_step

    stop = state.bad_epochs >= config.patience or state.epoch >= config.epochs
    # checkpoints are hashed, written and synced in the background while the steps go on
    with checkpoint.Writer() as writer, _progress(progress) as bar:
        while not stop:
            batches = plan(lengths, config.batch_size, edges, np.random.default_rng([config.seed, state.epoch]))
            task = bar.add_task(f"epoch {state.epoch + 1}/{config.epochs}", total=len(batches), info="",
                                completed=state.step_in_epoch)

            def feed(batch):  # run ahead in a thread: the next batch is on the device before it is asked for
                b = make(ids, lengths, train.labels, *batch, config.batch_size, weight)
                return jax.device_put((b.tokens, b.lengths, b.labels, b.weights))

            for b in prefetch(map(feed, batches[state.step_in_epoch:])):
                state.step, loss = _train_step(fixed, state.step, *b)
                state.losses.append(loss)
                state.step_in_epoch += 1
                state.global_step += 1
                if progress and len(state.losses) % 20 == 0:
                    bar.update(task, advance=20, info=f"loss {float(np.mean(state.losses[-20:])):.4f}")
                if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
                    save_state()
            check_finite()
            kept = averaged(state.step, config.ema > 0)
            members = prep.complete(eqx.combine(kept, static))
            report = evaluate(members, prep.vocab, dataset["val"], labels, dataset.task, config.maxlen, prep.val)
            score = report["score"]
            losses = [float(v) for v in jax.device_get(state.losses)]
            state.epoch, state.step_in_epoch, state.losses = state.epoch + 1, 0, []
            train_loss = float(np.mean(losses)) if losses else float("nan")
            if score > state.best_score:
                state.best_score, state.best_epoch, state.bad_epochs, state.best = score, state.epoch, 0, kept
                state.best_report = report
                if out is not None:
                    writer.save_model(out / checkpoint.MODEL, members, state.epoch)
                    state.model_written = state.epoch
            else:
                state.bad_epochs += 1
            seconds = state.elapsed + time.perf_counter() - session_start
            state.history.append({"epoch": state.epoch, "train_loss": train_loss, "val_score": score,
                                  "seconds": seconds})
            bar.update(task, completed=len(batches),
                       info=f"loss {train_loss:.4f}  val {prep.metric} {score:.4f}  best {state.best_score:.4f}")
            stop = (state.bad_epochs >= config.patience or state.epoch >= config.epochs
                    or (config.max_seconds is not None and seconds >= config.max_seconds))
            if not stop or keep_state:  # a run that finishes now removes its state: no need to write it
                save_state()
            if callback is not None and callback(state.epoch, score, state.history):
                stop = True
    state.elapsed += time.perf_counter() - session_start
    _LAST[0] = None  # the run's static parts (the n-grams' table) are not kept past it
    return state
