"""Runs on disk: safetensors for arrays, JSON for everything else, every file written atomically.

A run folder holds
    config.json         hyperparameters, model shape, vocabulary, label names, task and metric
    model.safetensors   the best weights (E, each layer's W_a, U_a, b_a, ..., W_y, b_y) of each member
                        of the ensemble, named `[i].E`, `[i].rnn.layers[0]...` for member i
    state.safetensors   while training: model, optimiser state and best weights, with the loop's position
                        in its metadata, so that `--resume` continues where it stopped
    metrics.json        validation and test scores when training is over

Nothing is pickled: a model is rebuilt from its config and its arrays are filled in by name.

    run = load_run("runs/emotion")
    run.predict_proba(["so happy today!"])        # (1, C)
    tokens, a, y = run.trace("so happy today!")   # per-step states (T, q) and probabilities (T, C)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from rnnlab.data.batches import bucket_edges, encode, make, plan
from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import Vocabulary
from rnnlab.models import ModelConfig, TextClassifier

CONFIG = "config.json"
MODEL = "model.safetensors"
STATE = "state.safetensors"
METRICS = "metrics.json"


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a crash) sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (is {path.parent} a run folder written by `rnnlab train`?)")
    return json.loads(path.read_text(encoding="utf-8"))


def tree_arrays(tree: PyTree, prefix: str = "") -> dict[str, np.ndarray]:
    """{name: array} for every array leaf, named by its path: prefix + `.rnn.layers[0].forward.cell.W_a`."""
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in leaves if leaf is not None}


def fill_tree(template: PyTree, arrays: dict[str, np.ndarray], prefix: str = "", source: str = "") -> PyTree:
    """`template` with each array leaf replaced by arrays[its name]; shapes and names must all match.
    The template's leaves may be arrays or `jax.ShapeDtypeStruct`s (from `eqx.filter_eval_shape`)."""
    arrays_part, static = eqx.partition(template, lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct))
    paths, treedef = jax.tree_util.tree_flatten_with_path(arrays_part)
    leaves = []
    for path, leaf in paths:
        name = prefix + jax.tree_util.keystr(path)
        if name not in arrays:
            raise ValueError(f"{source}: no array {name!r}; the file does not match the config")
        value = arrays[name]
        if value.shape != leaf.shape:
            raise ValueError(f"{source}: {name!r} has shape {value.shape}, the config gives {leaf.shape}")
        leaves.append(jnp.asarray(value, dtype=leaf.dtype))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    meta = None if metadata is None else {"json": json.dumps(metadata)}
    atomic_write(path, st_save({k: np.array(v, order="C") for k, v in arrays.items()}, metadata=meta))


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, metadata) of a safetensors file written by `save_arrays`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header.get("__metadata__", {}).get("json", "null"))
    return st_load(raw), meta


Members = tuple[TextClassifier, ...]


@dataclass
class Run:
    """A trained classifier with what it needs to read text: its members (an ensemble of one or more
    `TextClassifier`s whose probabilities are averaged), vocabulary, label names and config.

    `run.model` is the first member: one complete classifier, whose states `trace` shows.
    """

    members: Members
    config: dict
    vocab: Vocabulary
    labels: tuple[str, ...]
    task: str
    metric: str
    path: Path | None = None

    @property
    def model(self) -> TextClassifier:
        return self.members[0]

    @property
    def maxlen(self) -> int:
        return int(self.config.get("maxlen", 64))

    def encode(self, texts: list[str]) -> tuple[Int[np.ndarray, "N T"], Int[np.ndarray, " N"]]:
        """(ids (N, maxlen), lengths (N,)) for raw texts."""
        return encode(texts, self.vocab, self.maxlen)

    def predict_proba(self, texts: list[str], batch_size: int = 256) -> Float[np.ndarray, "N C"]:
        """Class probabilities (N, C) for raw texts: the mean over the members."""
        ids, lengths = self.encode(list(texts))
        return predict_proba(self.members, ids, lengths, batch_size)

    def predict(self, texts: list[str]) -> list[str]:
        """The most probable label name for each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def trace(self, text: str) -> tuple[list[str], Float[Array, "T q"], Float[Array, "T C"]]:
        """(tokens, a (T, q), y (T, C)) for one text, T = its number of tokens (capped at maxlen; an empty
        text reads as one `<unk>`). a: the first member's states a_t (`TextClassifier.trace`); y_t: the
        members' mean probabilities for the text read up to token t, so y_T is the run's prediction."""
        tokens = tokenize(text)[: self.maxlen] or ["<unk>"]
        ids = jnp.asarray(self.vocab.encode(tokens), jnp.int32)
        traces = [m.trace(ids) for m in self.members]
        return tokens, traces[0][0], jnp.mean(jnp.stack([y for _, y in traces]), axis=0)


@eqx.filter_jit
def _proba(members: Members, tokens: Array, lengths: Array) -> Array:
    return jnp.mean(jnp.stack([m.predict_proba(tokens, lengths) for m in members]), axis=0)


def predict_proba(
    members: Members | TextClassifier, ids: Int[np.ndarray, "N T"], lengths: Int[np.ndarray, " N"],
    batch_size: int = 256,
) -> Float[np.ndarray, "N C"]:
    """Probabilities (N, C) for encoded texts, averaged over the members, in length buckets (a few
    compiled shapes)."""
    if isinstance(members, TextClassifier):
        members = (members,)
    out = np.zeros((len(lengths), members[0].config.classes), np.float32)
    labels = np.zeros(len(lengths), np.int32)
    for T, rows in plan(lengths, batch_size, bucket_edges(ids.shape[1]), None):
        b = make(ids, lengths, labels, T, rows, batch_size)
        out[rows] = np.asarray(_proba(members, jnp.asarray(b.tokens), jnp.asarray(b.lengths)))[: len(rows)]
    return out


def save_run(
    run_dir: str | Path, members: Members | TextClassifier, config: dict, vocab: Vocabulary,
    labels: tuple[str, ...], task: str, metric: str,
) -> None:
    """Write config.json and model.safetensors (atomically each) into `run_dir`."""
    run_dir = Path(run_dir)
    if isinstance(members, TextClassifier):
        members = (members,)
    write_json(run_dir / CONFIG, {
        "config": config, "model": members[0].config.to_dict(), "members": len(members), "task": task,
        "metric": metric, "labels": list(labels), "vocab": vocab.tokens,
    })
    save_model(run_dir / MODEL, members)


def save_model(path: str | Path, members: Members) -> None:
    save_arrays(path, tree_arrays(members), {"model": members[0].config.to_dict(), "members": len(members)})


def load_run(run_dir: str | Path) -> Run:
    """The trained classifier in `run_dir` (config.json + model.safetensors), ready to predict."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / CONFIG)
    model_config = ModelConfig(**info["model"])
    template = tuple(eqx.filter_eval_shape(TextClassifier, model_config, None, key=jax.random.key(0))
                     for _ in range(int(info.get("members", 1))))
    arrays, _ = load_arrays(run_dir / MODEL)
    members = fill_tree(template, arrays, source=str(run_dir / MODEL))
    return Run(members, info["config"], Vocabulary(info["vocab"]), tuple(info["labels"]), info["task"],
               info["metric"], run_dir)
