"""The task a sweep runs on labelled text: `rnnlab.train.fit` with a trial's values over a base `Config`.

    task = TrainTask(rnnlab.data.load("../shared/data/tweeteval/emotion"), Config(epochs=8), out_dir)
    task.validate({"units": 32, "cell": "gru"}, log)   # the best validation score, official metric
    task.test({"units": 32, "cell": "gru"}, log)       # retrained into out_dir/best, scored once on test

Every trial trains with the same seed, so two trials differ only by the values swept. With `folds=K` a trial
is scored by K-fold cross-validation on the train split instead (the mean of the K folds' best validation
scores), for data whose val split is too small to tell configurations apart.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from rnnlab import metrics, train
from rnnlab.data.dataset import Dataset, Split
from rnnlab.data.tokenize import tokenize
from rnnlab.models import TextClassifier
from rnnlab.tune.study import TrialLog


def count(tree: Any) -> int:
    """The number of scalars in the arrays of a pytree (shapes only: works on `eqx.filter_eval_shape`)."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


class TrainTask:
    """Trains `train.Config` with a trial's values (units, cell, layers, k, dropout, lr, maxlen) replaced."""

    def __init__(self, dataset: Dataset, base: train.Config, out_dir: str | Path | None = None, folds: int = 0):
        if folds == 1 or folds < 0:
            raise ValueError(f"folds must be 0 (score on the val split) or at least 2; got {folds}")
        self.dataset = train.split_off_val(dataset, base.val_fraction, base.seed)
        if not folds and not len(self.dataset["val"]):
            raise ValueError(f"{dataset.source}: train has {len(dataset['train'])} texts, too few to hold out a "
                             "validation split (a label needs 2 texts to give one): add texts or a val split")
        self.base = base
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.metric = metrics.official_metric(dataset.task)
        self.folds = cross_validation(dataset, folds, base.seed) if folds else []
        self._tokens: list[list[str]] | None = None   # the train split's tokens, once

    def config(self, values: dict[str, Any]) -> train.Config:
        return dataclasses.replace(self.base, **values)

    def parameters(self, config: train.Config) -> tuple[int, int]:
        """(trainable parameters, those of the recurrent layers) of the model(s) `config` builds, from
        shapes alone, with the vocabulary `train.fit` builds (`train.vocabulary`)."""
        if self._tokens is None:
            self._tokens = [tokenize(t) for t in self.dataset["train"].texts]
        _, wv, rows = train.vocabulary(config, self._tokens)
        model_config = config.model_config(rows, len(self.dataset.labels), wv.k if wv is not None else None)
        model = eqx.filter_eval_shape(lambda: TextClassifier(model_config, None, key=jax.random.key(0)))
        members = getattr(config, "members", 1)
        return members * trained(model), members * count(model.rnn)

    def _fit(self, values: dict[str, Any], log: TrialLog, dataset: Dataset, out_dir: Path | None,
             test: bool, step: int = 0) -> train.FitResult:
        config = self.config(values)
        if "params" not in log.notes:              # before training, so that a pruned trial has it too
            total, recurrent = self.parameters(config)
            log.note(params=total, rnn_params=recurrent)

        def on_epoch(epoch: int, score: float, history: list[dict]) -> bool:
            log.report(step + epoch, score)
            return False

        result = train.fit(config, dataset, out_dir=out_dir, progress=False, callback=on_epoch,
                           evaluate_test=test)
        members = getattr(result, "members", None) or (result.model,)
        rows = getattr(result, "trained_rows", None)
        log.note(params=sum(trained(m, rows) for m in members), rnn_params=sum(count(m.rnn) for m in members),
                 epochs=len(result.history), best_epoch=result.best_epoch)
        return result

    def validate(self, config: dict[str, Any], log: TrialLog) -> float:
        """The best validation score; with folds, the mean over the folds (epoch e of fold i is reported
        as step i·epochs + e, so the pruner compares like with like)."""
        if not self.folds:
            return float(self._fit(config, log, self.dataset, None, test=False).best_score)
        scores = [float(self._fit(config, log, fold, None, test=False, step=i * self.base.epochs).best_score)
                  for i, fold in enumerate(self.folds)]
        log.note(fold_scores=scores)
        return float(np.mean(scores))

    def test(self, config: dict[str, Any], log: TrialLog) -> dict[str, float]:
        out = self.out_dir / "best" if self.out_dir is not None else None
        result = self._fit(config, log, self.dataset, out, test=True)
        scores = {"val": float(result.val["score"]), "val_accuracy": float(result.val["accuracy"])}
        if result.test is not None:
            scores |= {"test": float(result.test["score"]), "test_accuracy": float(result.test["accuracy"])}
        return scores


def trained(model: TextClassifier, rows: int | None = None) -> int:
    """Parameters the optimiser updates: all of them, less E when the embeddings are frozen, and less E's rows
    past the first `rows` (the vector words no training text holds, `train.Prepared`)."""
    if model.config.freeze_embeddings:
        return count(model) - count(model.E)
    V, k = model.E.shape
    return count(model) - (V - rows) * k if rows is not None and rows < V else count(model)


def cross_validation(dataset: Dataset, K: int, seed: int) -> list[Dataset]:
    """K datasets from the train split: fold i validates on the i-th of K stratified parts of it and trains on
    the other K - 1 (no test split: it stays for the one final evaluation)."""
    train_split = dataset["train"]
    rng = np.random.default_rng([seed, 11])
    part = np.empty(len(train_split), np.int64)
    for c in np.unique(train_split.labels):
        rows = rng.permutation(np.flatnonzero(train_split.labels == c))
        part[rows] = (np.arange(len(rows)) + rng.integers(K)) % K
    pick = lambda mask: Split([t for t, m in zip(train_split.texts, mask, strict=True) if m],  # noqa: E731
                              train_split.labels[mask], train_split.source)
    return [Dataset(dataset.task, dataset.labels, {"train": pick(part != i), "val": pick(part == i)},
                    dataset.source) for i in range(K)]


def token_lengths(dataset: Dataset, split: str = "train") -> np.ndarray:
    """The number of tokens T of each text of a split (before any cut to maxlen)."""
    return np.array([len(tokenize(t)) for t in dataset[split].texts])
