"""The task a sweep runs on labelled text: `rnnlab.train.fit` with a trial's values over a base `Config`.

    task = TrainTask(rnnlab.data.load("../shared/data/tweeteval/emotion"), Config(epochs=8), out_dir)
    task.validate({"units": 32, "cell": "gru"}, log)   # the best validation score, official metric
    task.test({"units": 32, "cell": "gru"}, log)       # retrained into out_dir/best, scored once on test

Every trial trains with the same seed, so two trials differ only by the values swept.
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
from rnnlab.data.dataset import Dataset
from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import Vocabulary
from rnnlab.models import TextClassifier
from rnnlab.tune import TrialLog


def count(tree: Any) -> int:
    """The number of scalars in the arrays of a pytree (shapes only: works on `eqx.filter_eval_shape`)."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


class TrainTask:
    """Trains `train.Config` with a trial's values (units, cell, layers, k, dropout, lr, maxlen) replaced."""

    def __init__(self, dataset: Dataset, base: train.Config, out_dir: str | Path | None = None):
        self.dataset = train.split_off_val(dataset, base.val_fraction, base.seed)
        self.base = base
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.metric = metrics.official_metric(dataset.task)
        self._vocab_size: int | None = None
        self._k: dict[str | None, int] = {}

    def config(self, values: dict[str, Any]) -> train.Config:
        return dataclasses.replace(self.base, **values)

    def parameters(self, config: train.Config) -> tuple[int, int]:
        """(all trainable parameters, those of the recurrent layers) of the model `config` builds."""
        if self._vocab_size is None:
            texts = self.dataset["train"].texts
            vocab = Vocabulary.build([tokenize(t) for t in texts], self.base.min_freq, self.base.max_vocab)
            self._vocab_size = len(vocab)
        k = config.k
        if config.embeddings:
            if config.embeddings not in self._k:
                from rnnlab.data.embeddings import load_vectors

                self._k[config.embeddings] = load_vectors(config.embeddings).k
            k = self._k[config.embeddings]
        model_config = config.model_config(self._vocab_size, len(self.dataset.labels), k)
        model = eqx.filter_eval_shape(TextClassifier, model_config, None, key=jax.random.key(0))
        total = count(model)
        if config.freeze_embeddings:
            total -= count(model.E)
        return total, count(model.rnn)

    def _fit(self, values: dict[str, Any], log: TrialLog, out_dir: Path | None, test: bool
             ) -> train.FitResult:
        config = self.config(values)
        total, recurrent = self.parameters(config)
        log.note(params=total, rnn_params=recurrent)

        def on_epoch(epoch: int, score: float, history: list[dict]) -> bool:
            log.report(epoch, score)
            return False

        result = train.fit(config, self.dataset, out_dir=out_dir, progress=False, callback=on_epoch,
                           evaluate_test=test)
        log.note(epochs=len(result.history), best_epoch=result.best_epoch)
        return result

    def validate(self, config: dict[str, Any], log: TrialLog) -> float:
        return float(self._fit(config, log, None, test=False).best_score)

    def test(self, config: dict[str, Any], log: TrialLog) -> dict[str, float]:
        out = self.out_dir / "best" if self.out_dir is not None else None
        result = self._fit(config, log, out, test=True)
        scores = {"val": float(result.val["score"]), "val_accuracy": float(result.val["accuracy"])}
        if result.test is not None:
            scores |= {"test": float(result.test["score"]), "test_accuracy": float(result.test["accuracy"])}
        return scores


def token_lengths(dataset: Dataset, split: str = "train") -> np.ndarray:
    """The number of tokens T of each text of a split (before any cut to maxlen)."""
    return np.array([len(tokenize(t)) for t in dataset[split].texts])
