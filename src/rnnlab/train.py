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

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Float, Int

from rnnlab import baseline, checkpoint, compile_cache, inference, metrics, optim
from rnnlab.data import subwords
from rnnlab.data.batches import bucket_edges, encode, make, plan, prefetch
from rnnlab.data.dataset import Dataset, Split
from rnnlab.data.embeddings import embedding_matrix, load_vectors
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
    max_vocab: int = 50_000          # V at most, <pad> and <unk> included
    embeddings: str | None = "glove-6b-50d"  # "glove-6b-50d", a word2vec/GloVe text file, or None
    vector_words: int = 0            # also give the vocabulary the first N words of the pretrained vectors
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
    template = eqx.filter_eval_shape(TextClassifier, model_config, None, key=jax.random.key(0))
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
    return np.asarray(jax.vmap(rate)(jnp.minimum(jnp.arange(size), max(total_steps - 1, 0))), np.float32)


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


def init_state(params: tuple) -> TrainState:
    """Zero moments; the average starts at the weights. Copies of `params`: the step donates its buffers."""
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


@eqx.filter_jit(donate="all-except-first")
def _train_step(fixed, state: TrainState, tokens, lengths, labels, weights):
    """One AdamW step for each member on its class-weighted cross-entropy, each member's gradient clipped to
    global norm `clip`, and the moving average stepped with d = `optim.ema_decay`. fixed = (static,
    StepConfig, rates (S,), key), not donated; state's buffers are donated (updated in place). E's
    gradient is taken through its n = B·T lookups x = E[tokens] (n, k), summed per distinct row, and only
    those rows are updated (`rnnlab.optim`). Returns the state after the step and the members' mean loss."""
    static, cfg, rates, key = fixed
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


def _fit(config: Config, dataset: Dataset, out_dir: Path | None, progress: bool, callback: EpochCallback | None,
         resume: bool, evaluate_test: bool, keep_state: bool, exist_ok: bool, say: Callable[[str], None],
         ) -> FitResult:
    """`fit`'s body, with out_dir locked."""
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
    # split with the config the run trains with: a resume holds out the rows its run held out
    dataset = split_off_val(dataset, config.val_fraction, config.seed)
    train, val = dataset["train"], dataset["val"]
    labels, C = dataset.labels, len(dataset.labels)
    metric = metrics.official_metric(dataset.task)

    # vocabulary and initial embedding
    if resuming:
        vocab = Vocabulary(info["vocab"])
        model_config = ModelConfig(**info["model"])
        E = None
    else:
        tokenized = [tokenize(t) for t in train.texts]
        vocab = Vocabulary.build(tokenized, config.min_freq, config.max_vocab)
        E, k = None, config.k
        if config.embeddings:
            wv = load_vectors(config.embeddings)
            if config.vector_words:
                vocab = vocab.extended(wv.words[: config.vector_words])
            E, _ = embedding_matrix(vocab, wv, seed=config.seed)
            k = wv.k
        model_config = config.model_config(len(vocab), C, k)
        longest = max((len(t) for t in tokenized), default=1)
        T = min(config.maxlen, -(-longest // 32) * 32)   # the bucket the longest text falls in
        check_memory(config, model_config, sum(len(s) for s in dataset.splits.values()), T)
    key = jax.random.key(config.seed)
    if config.members < 1:
        raise ValueError(f"members must be >= 1; got {config.members}")
    member_keys = [jax.random.fold_in(key, 0), *(jax.random.fold_in(key, 1000 + i) for i in range(1, config.members))]
    grams = (subwords.table(vocab.tokens, model_config.subword_buckets, model_config.subword_grams)
             if model_config.subword_buckets else None)
    members = tuple(with_engine(TextClassifier(model_config, E, key=k, grams=grams), config.engine)
                    for k in member_keys)
    params, static = eqx.partition(members, tuple(trainable(m) for m in members))

    ids, lengths = (vocab.encode_batch(tokenized, config.maxlen) if not resuming
                    else encode(train.texts, vocab, config.maxlen))
    val_encoded = encode(val.texts, vocab, config.maxlen)
    if config.pretrain_epochs and not resuming:
        members = tuple(pretrain(m, ids, lengths, epochs=config.pretrain_epochs, lr=config.lr,
                                 batch_size=config.batch_size, clip=config.clip, seed=config.seed + i)[0]
                        for i, m in enumerate(members))
        params, static = eqx.partition(members, tuple(trainable(m) for m in members))
    edges = bucket_edges(config.maxlen)
    weight = class_weight(train.labels, C, config.class_weights)
    steps_per_epoch = len(plan(lengths, config.batch_size, edges, None))
    rates = schedule(config, steps_per_epoch * config.epochs)
    state = init_state(params)
    opt_state = (state.adam, state.ema_state)

    epoch, step_in_epoch, global_step, elapsed = 0, 0, 0, 0.0
    best_score, best_epoch, bad_epochs, history = -math.inf, -1, 0, []
    ema, best_params = state.ema, jax.tree.map(jnp.copy, params)
    epoch_losses: list[float] = []   # the losses of the epoch a checkpoint was written in, so far
    last_saved = 0
    if resuming:
        arrays, meta = checkpoint.read_state(state_path)
        params = checkpoint.fill_tree(params, arrays, "params", str(state_path))
        best_params = checkpoint.fill_tree(params, arrays, "best", str(state_path))
        ema = checkpoint.fill_tree(params, arrays, "ema", str(state_path))
        opt_state = checkpoint.fill_tree(opt_state, arrays, "opt", str(state_path))
        epoch, step_in_epoch, global_step = meta["epoch"], meta["step_in_epoch"], meta["global_step"]
        best_score, best_epoch, bad_epochs = meta["best_score"], meta["best_epoch"], meta["bad_epochs"]
        history, elapsed = meta["history"], meta["elapsed"]
        epoch_losses, last_saved = list(meta.get("epoch_losses", [])), global_step
        if best_score is None:
            best_score = -math.inf
        say(f"resuming {out} at epoch {epoch + 1} of {config.epochs}, step {step_in_epoch} of {steps_per_epoch} "
            f"({global_step} steps done)")
    elif out is not None:
        checkpoint.save_config(out, model_config, len(members), config.to_dict(), vocab, labels, dataset.task,
                               metric, {"source": dataset.source, "fingerprint": fingerprint})

    def check_finite(weights):
        """Stop with TrainingDivergedError at the first step of this epoch whose loss is NaN or inf, or when
        `weights` are: nothing of that step is written, the run keeps its last good checkpoint."""
        values = np.array([float(v) for v in losses], np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        weights_ok = bad.size == 0 and all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(weights))
        if bad.size == 0 and weights_ok:
            return
        i = int(bad[0]) if bad.size else len(losses) - 1
        what = f"the training loss became {values[i]}" if bad.size else "the weights became NaN or inf"
        kept = ((f"; {out} keeps its last good checkpoint (step {last_saved})" if last_saved else
                 f"; {out} has no checkpoint yet")
                + (f" and its best model (epoch {best_epoch})" if best_epoch > 0 else "")) if out is not None else ""
        raise TrainingDivergedError(
            f"{what} at step {global_step - len(losses) + i + 1} (epoch {epoch + 1}, step {i + 1} of "
            f"{steps_per_epoch}): training stopped{kept}; lower --lr or --clip, or check the data and "
            "the embeddings")

    def save_state():
        nonlocal last_saved
        check_finite(params)
        if state_path is None:
            return
        arrays = {**checkpoint.tree_arrays(params, "params"), **checkpoint.tree_arrays(best_params, "best"),
                  **checkpoint.tree_arrays(ema, "ema"), **checkpoint.tree_arrays(opt_state, "opt")}
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "best_score": None if best_score == -math.inf else best_score, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history,
                "elapsed": elapsed + time.perf_counter() - session_start,
                "epoch_losses": [float(v) for v in losses] if step_in_epoch else []}
        checkpoint.save_arrays(state_path, arrays, meta)
        last_saved = global_step

    state = TrainState(params, ema, *opt_state)
    fixed = (static, StepConfig.of(config), jnp.asarray(rates), key)
    session_start = time.perf_counter()
    stop = bad_epochs >= config.patience or epoch >= config.epochs
    with _progress(progress) as bar:
        while not stop:
            batches = plan(lengths, config.batch_size, edges, np.random.default_rng([config.seed, epoch]))
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(batches), info="",
                                completed=step_in_epoch)
            losses, epoch_losses = epoch_losses, []
            def feed(batch):  # run ahead in a thread: the next batch is on the device before it is asked for
                b = make(ids, lengths, train.labels, *batch, config.batch_size, weight)
                return jax.device_put((b.tokens, b.lengths, b.labels, b.weights))

            for b in prefetch(map(feed, batches[step_in_epoch:])):
                state, loss = _train_step(fixed, state, *b)
                params, ema, opt_state = state.params, state.ema, (state.adam, state.ema_state)
                losses.append(loss)
                step_in_epoch += 1
                global_step += 1
                if len(losses) % 20 == 0:
                    bar.update(task, advance=20, info=f"loss {float(np.mean(losses[-20:])):.4f}")
                if config.checkpoint_every and global_step % config.checkpoint_every == 0:
                    save_state()
            check_finite(params)
            kept = averaged(state, config.ema > 0)
            members = eqx.combine(kept, static)
            score = evaluate(members, vocab, val, labels, dataset.task, config.maxlen, val_encoded)["score"]
            epoch, step_in_epoch = epoch + 1, 0
            train_loss = float(np.mean([float(v) for v in losses])) if losses else float("nan")
            if score > best_score:
                best_score, best_epoch, bad_epochs, best_params = score, epoch, 0, kept
                if out is not None:
                    checkpoint.save_model(out / checkpoint.MODEL, members, epoch)
            else:
                bad_epochs += 1
            seconds = elapsed + time.perf_counter() - session_start
            history.append({"epoch": epoch, "train_loss": train_loss, "val_score": score, "seconds": seconds})
            bar.update(task, completed=len(batches),
                       info=f"loss {train_loss:.4f}  val {metric} {score:.4f}  best {best_score:.4f}")
            stop = (bad_epochs >= config.patience or epoch >= config.epochs
                    or (config.max_seconds is not None and seconds >= config.max_seconds))
            save_state()
            if callback is not None and callback(epoch, score, history):
                stop = True

    members = eqx.combine(best_params, static)
    result = FitResult(best_score, best_epoch, metric, members, vocab, labels, history, out_dir=out,
                       seconds=elapsed + time.perf_counter() - session_start)
    result.val = evaluate(members, vocab, val, labels, dataset.task, config.maxlen, val_encoded)
    if evaluate_test and "test" in dataset:
        result.test = evaluate(members, vocab, dataset["test"], labels, dataset.task, config.maxlen)
    if config.baseline and out is not None:  # runs on disk (a tuning trial in memory skips it)
        result.baseline = baseline.floor_report(train, val, dataset["test"] if result.test is not None else None,
                                                labels, dataset.task)
    if out is not None:
        checkpoint.save_model(out / checkpoint.MODEL, members, best_epoch)
        checkpoint.write_json(out / checkpoint.METRICS, {
            "task": dataset.task, "metric": metric, "best_epoch": best_epoch,
            "val": {metric: result.val["score"], **result.val},
            "test": None if result.test is None else {metric: result.test["score"], **result.test},
            "history": history, "train_seconds": result.seconds, "baseline": result.baseline,
            "wall_seconds": time.perf_counter() - start,
        })
        if not keep_state:
            state_path.unlink(missing_ok=True)
            checkpoint.fsync_dir(out)
    return result
