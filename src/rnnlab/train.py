"""Training a `TextClassifier` on a `Dataset`: Optax AdamW, length buckets, early stopping, checkpoints.

    result = fit(Config(), rnnlab.data.load("../shared/data/tweeteval/emotion"), out_dir="runs/emotion")
    result.best_score     # the validation score (official metric) of the kept model

Each epoch shuffles with a generator seeded by (seed, epoch) and draws dropout keys from (seed, step), so a
fixed seed gives identical results, and a run resumed from a checkpoint continues the very same sequence
of batches. Checkpoints (`state.safetensors`) are written every `checkpoint_every` steps and at the end of
each epoch; the best model so far is kept by its validation score and restored at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Float, Int

from rnnlab import checkpoint, metrics
from rnnlab.data.batches import bucket_edges, encode, make, plan
from rnnlab.data.dataset import Dataset, Split
from rnnlab.data.embeddings import embedding_matrix, load_vectors
from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import Vocabulary
from rnnlab.models import ModelConfig, TextClassifier
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
    checkpoint_every: int = 100      # steps between mid-epoch checkpoints (with an out_dir)

    def model_config(self, vocab_size: int, classes: int, k: int | None = None) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size, classes=classes, k=k or self.k, cell=self.cell, units=self.units,
            layers=self.layers, bidirectional=self.bidirectional, pooling=self.pooling, dropout=self.dropout,
            embed_dropout=self.embed_dropout, freeze_embeddings=self.freeze_embeddings)

    def to_dict(self) -> dict:
        return asdict(self)

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

    @property
    def model(self) -> TextClassifier:
        """The first member (the only one unless `Config.members` > 1)."""
        return self.members[0]

    def run(self, config: Config, task: str) -> checkpoint.Run:
        return checkpoint.Run(self.members, config.to_dict(), self.vocab, self.labels, task, self.metric,
                              self.out_dir)


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


def optimizer(config: Config, total_steps: int) -> optax.GradientTransformation:
    """AdamW with a linear warm-up and cosine decay of the rate (gradients are clipped in the step)."""
    warmup = max(1, int(config.warmup * total_steps))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.lr, warmup, max(total_steps, warmup + 1), end_value=config.lr * 0.05)
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def _clip(grads, max_norm: float):
    """grads scaled down to global norm max_norm when above it."""
    norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
    return jax.tree.map(lambda g: g * scale, grads)


@eqx.filter_jit
def _train_step(params, ema, static, opt_state, optim, clip, embed_lr, decay, step, tokens, lengths, labels, weights,
                key):
    """One AdamW step for each member on its class-weighted cross-entropy, each member's gradient clipped
    to global norm `clip`; ema <- d·ema + (1 - d)·params with d = min(decay, (1 + step) / (10 + step)),
    so that early averages do not dwell on the initial weights. Returns the members' mean loss."""
    def loss_fn(params):
        total = 0.0
        for i, model in enumerate(eqx.combine(params, static)):
            logits = model(tokens, lengths, key=jax.random.fold_in(key, i))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            total = total + (ce * weights).sum() / jnp.maximum(weights.sum(), 1e-9)
        return total

    loss, grads = eqx.filter_value_and_grad(loss_fn)(params)
    grads = tuple(_clip(g, clip) for g in grads)
    loss = loss / len(grads)
    updates, opt_state = optim.update(grads, opt_state, params)
    if embed_lr != 1.0:
        updates = tuple(u if u.E is None else eqx.tree_at(lambda m: m.E, u, u.E * embed_lr) for u in updates)
    params = eqx.apply_updates(params, updates)
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
    return params, ema, opt_state, loss


def evaluate(
    members: tuple[TextClassifier, ...] | TextClassifier, vocab: Vocabulary, split: Split,
    labels: tuple[str, ...], task: str, maxlen: int,
) -> dict:
    """`metrics.report` (official metric, accuracy, per class, confusion matrix) for one split, from the
    members' mean probabilities."""
    ids, lengths = encode(split.texts, vocab, maxlen)
    proba = checkpoint.predict_proba(members, ids, lengths)
    return metrics.report(split.labels, proba.argmax(axis=1), labels, task)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)


def fit(
    config: Config,
    dataset: Dataset,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    callback: EpochCallback | None = None,
    resume: bool = False,
    evaluate_test: bool = True,
) -> FitResult:
    """Train on dataset["train"], select by dataset["val"] (the official metric), report val and test.

    out_dir: where to write the run (config.json, model.safetensors, state.safetensors, metrics.json);
    None keeps everything in memory. resume: continue from out_dir's state.safetensors, if there is one.
    callback(epoch, val_score, history) is called after every epoch; True from it stops training.
    """
    start = time.perf_counter()
    dataset = split_off_val(dataset, config.val_fraction, config.seed)
    train, val = dataset["train"], dataset["val"]
    labels, C = dataset.labels, len(dataset.labels)
    metric = metrics.official_metric(dataset.task)
    out = Path(out_dir) if out_dir is not None else None
    state_path = out / checkpoint.STATE if out is not None else None
    resuming = resume and state_path is not None and state_path.is_file()

    # vocabulary and initial embedding
    if resuming:
        info = checkpoint.read_json(out / checkpoint.CONFIG)
        if info["config"] != config.to_dict():
            config = Config.from_dict(info["config"])  # the run continues with the settings it began with
        vocab = Vocabulary(info["vocab"])
        model_config = ModelConfig(**info["model"])
        E = None
    else:
        vocab = Vocabulary.build([tokenize(t) for t in train.texts], config.min_freq, config.max_vocab)
        E, k = None, config.k
        if config.embeddings:
            wv = load_vectors(config.embeddings)
            if config.vector_words:
                vocab = vocab.extended(wv.words[: config.vector_words])
            E, _ = embedding_matrix(vocab, wv, seed=config.seed)
            k = wv.k
        model_config = config.model_config(len(vocab), C, k)
    key = jax.random.key(config.seed)
    if config.members < 1:
        raise ValueError(f"members must be >= 1; got {config.members}")
    member_keys = [jax.random.fold_in(key, 0), *(jax.random.fold_in(key, 1000 + i) for i in range(1, config.members))]
    members = tuple(TextClassifier(model_config, E, key=k) for k in member_keys)
    params, static = eqx.partition(members, tuple(trainable(m) for m in members))

    ids, lengths = encode(train.texts, vocab, config.maxlen)
    if config.pretrain_epochs and not resuming:
        members = tuple(pretrain(m, ids, lengths, epochs=config.pretrain_epochs, lr=config.lr,
                                 batch_size=config.batch_size, clip=config.clip, seed=config.seed + i)[0]
                        for i, m in enumerate(members))
        params, static = eqx.partition(members, tuple(trainable(m) for m in members))
    edges = bucket_edges(config.maxlen)
    weight = class_weight(train.labels, C, config.class_weights)
    steps_per_epoch = len(plan(lengths, config.batch_size, edges, None))
    optim = optimizer(config, steps_per_epoch * config.epochs)
    opt_state = optim.init(params)

    epoch, step_in_epoch, global_step, elapsed = 0, 0, 0, 0.0
    best_score, best_epoch, bad_epochs, history = -math.inf, -1, 0, []
    best_params = ema = params
    if resuming:
        arrays, meta = checkpoint.load_arrays(state_path)
        params = checkpoint.fill_tree(params, arrays, "params", str(state_path))
        best_params = checkpoint.fill_tree(params, arrays, "best", str(state_path))
        ema = checkpoint.fill_tree(params, arrays, "ema", str(state_path))
        opt_state = checkpoint.fill_tree(opt_state, arrays, "opt", str(state_path))
        epoch, step_in_epoch, global_step = meta["epoch"], meta["step_in_epoch"], meta["global_step"]
        best_score, best_epoch, bad_epochs = meta["best_score"], meta["best_epoch"], meta["bad_epochs"]
        history, elapsed = meta["history"], meta["elapsed"]
        if best_score is None:
            best_score = -math.inf
    elif out is not None:
        checkpoint.save_run(out, members, config.to_dict(), vocab, labels, dataset.task, metric)

    def save_state():
        if state_path is None:
            return
        arrays = {**checkpoint.tree_arrays(params, "params"), **checkpoint.tree_arrays(best_params, "best"),
                  **checkpoint.tree_arrays(ema, "ema"), **checkpoint.tree_arrays(opt_state, "opt")}
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "best_score": None if best_score == -math.inf else best_score, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history,
                "elapsed": elapsed + time.perf_counter() - session_start}
        checkpoint.save_arrays(state_path, arrays, meta)

    decay = jnp.float32(config.ema)
    session_start = time.perf_counter()
    stop = bad_epochs >= config.patience or epoch >= config.epochs
    with _progress(progress) as bar:
        while not stop:
            batches = plan(lengths, config.batch_size, edges, np.random.default_rng([config.seed, epoch]))
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(batches), info="",
                                completed=step_in_epoch)
            losses = []
            for T, rows in batches[step_in_epoch:]:
                b = make(ids, lengths, train.labels, T, rows, config.batch_size, weight)
                params, ema, opt_state, loss = _train_step(
                    params, ema, static, opt_state, optim, config.clip, config.embed_lr, decay,
                    jnp.float32(global_step),
                    jnp.asarray(b.tokens), jnp.asarray(b.lengths),
                    jnp.asarray(b.labels), jnp.asarray(b.weights), jax.random.fold_in(key, global_step + 1))
                losses.append(loss)
                step_in_epoch += 1
                global_step += 1
                if len(losses) % 20 == 0:
                    bar.update(task, advance=20, info=f"loss {float(np.mean(losses[-20:])):.4f}")
                if config.checkpoint_every and global_step % config.checkpoint_every == 0:
                    save_state()
            kept = ema if config.ema > 0 else params
            members = eqx.combine(kept, static)
            score = evaluate(members, vocab, val, labels, dataset.task, config.maxlen)["score"]
            epoch, step_in_epoch = epoch + 1, 0
            train_loss = float(np.mean([float(v) for v in losses])) if losses else float("nan")
            if score > best_score:
                best_score, best_epoch, bad_epochs, best_params = score, epoch, 0, kept
                if out is not None:
                    checkpoint.save_model(out / checkpoint.MODEL, members)
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
    result.val = evaluate(members, vocab, val, labels, dataset.task, config.maxlen)
    if evaluate_test and "test" in dataset:
        result.test = evaluate(members, vocab, dataset["test"], labels, dataset.task, config.maxlen)
    if out is not None:
        checkpoint.save_model(out / checkpoint.MODEL, members)
        checkpoint.write_json(out / checkpoint.METRICS, {
            "task": dataset.task, "metric": metric, "best_epoch": best_epoch,
            "val": {metric: result.val["score"], **result.val},
            "test": None if result.test is None else {metric: result.test["score"], **result.test},
            "history": history, "train_seconds": result.seconds,
            "wall_seconds": time.perf_counter() - start,
        })
    return result
