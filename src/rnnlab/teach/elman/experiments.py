"""Elman's (1990) experiments: a many-to-many model trained to predict the next element of a stream.

    a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)        (T steps of one Recurrent layer, p units)
    y_t = W_y a_t + b_y                           (a prediction at every step: many-to-many,
                                                   `models.SequenceModel`)

`train_sequence("elman:sentences")` trains one; `evaluate` runs it over a stream; `mean_hidden_by_word`
averages its states per word. How a run is reported and drawn (the figures, the category tree) is in
`views` (`report`), which reads this module.

Training follows the stream the way the paper does, without cutting it into unrelated pieces: the stream
is split into B parallel streams, read in windows of W steps, and each window starts from the state the
previous one ended in (truncated backpropagation through time: gradients flow W steps back). The layer
carries the state from window to window (`Recurrent(..., state_0=)`), so the windows of the B streams run
as one batch on the fused engine.

A run folder holds config.json ("kind": "sequence": the settings, the loss history, the report's numbers)
and model.safetensors (the weights), as a classifier's does; folders of the earlier layout
(sequence.json, sequence.safetensors) still load.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from rnnlab import models
from rnnlab.cells import Activation
from rnnlab.layers import Bidirectional
from rnnlab.models import sequence_model
from rnnlab.teach.elman import data as elman

__all__ = [
    "PAPER",
    "Evaluation",
    "SequenceRun",
    "evaluate",
    "is_sequence_run",
    "load_sequence",
    "mean_hidden_by_word",
    "save_sequence",
    "train_sequence",
]


def __getattr__(name: str):
    if name == "SequenceModel":  # the model moved to rnnlab.models; the old constructor keeps working
        warnings.warn("rnnlab.teach.elman.experiments.SequenceModel is deprecated: the model is "
                      "rnnlab.models.SequenceModel, built by "
                      "rnnlab.models.sequence_model(cell, k, p, q, output, key=...)",
                      DeprecationWarning, stacklevel=2)
        return _sequence_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sequence_model(cell: str, features: int, units: int, outputs: int, output: str = "softmax", *,
                    activation: str | Activation = "tanh", key: PRNGKeyArray) -> models.SequenceModel:
    """What `experiments.SequenceModel(...)` built: one layer of `cell`, a readout at every step."""
    if output not in ("sigmoid", "softmax"):
        raise ValueError(f"output must be 'sigmoid' or 'softmax'; got {output!r}")
    return sequence_model(cell, features, units, outputs, output, activation=activation, key=key)


def step_loss(model: models.SequenceModel, logits: Float[Array, "*T q"], targets: Float[Array, "*T q"]
              ) -> Float[Array, "*T"]:
    """Loss at every step (nats): binary cross-entropy summed over bits, or the next symbol's
    (`model.step_loss`)."""
    return model.step_loss(logits, targets)


# The paper's sizes (hidden units) and sizes that train here in seconds on two CPU cores.
PAPER = {"xor": 2, "letters": 20, "sentences": 150}
DEFAULTS = {
    "xor": dict(units=8, epochs=60, lr=1e-2, streams=8, window=24, activation="tanh"),
    "letters": dict(units=20, epochs=60, lr=1e-2, streams=8, window=24, activation="tanh"),
    # the paper's network: 150 logistic units; a few passes (the paper: 6), see docs/elman1990.md
    "sentences": dict(units=150, epochs=5, lr=1e-3, streams=16, window=24, activation="sigmoid"),
}
DESCRIPTIONS = {
    "xor": "bit pairs each followed by their XOR; predict the next bit",
    "letters": "consonants b, d, g expanded to ba, dii, guuu; predict the next letter's 6 features",
    "sentences": "10,000 simple sentences without breaks; predict the next word",
}
FEATURES = {"xor": 1, "letters": 6, "sentences": len(elman.WORDS)}


@dataclass
class SequenceRun:
    """A trained model with the data it saw, its loss per epoch (mean per step, nats) and its settings."""

    model: models.SequenceModel
    data: elman.ElmanData
    history: list[float]
    seconds: float
    config: dict = field(default_factory=dict)


def _windows(data: elman.ElmanData, streams: int, window: int) -> tuple[Array, Array]:
    """The stream as (n, B, W, k) inputs and (n, B, W, q) targets: B parallel streams, n windows of W."""
    T = data.T
    L = (T // streams // window) * window
    if L == 0:
        raise ValueError(f"{data.name} has T={T} steps: too few for {streams} streams of windows of {window}")
    x = data.inputs[0, : streams * L].reshape(streams, L // window, window, -1).transpose(1, 0, 2, 3)
    y = data.targets[0, : streams * L].reshape(streams, L // window, window, -1).transpose(1, 0, 2, 3)
    return jnp.asarray(x), jnp.asarray(y)


def train_sequence(
    data: elman.ElmanData | str,
    *,
    cell: str = "elman",
    units: int | None = None,
    activation: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    streams: int | None = None,
    window: int | None = None,
    size: int | None = None,
    seed: int = 0,
    log: Callable[[int, float], None] | None = None,
) -> SequenceRun:
    """Train a many-to-many `models.SequenceModel` to predict the next element of an Elman stream, with Adam.

    data: an `ElmanData` or a name ("elman:xor", "elman:letters", "elman:sentences"; generated with `seed`
    and `size`). cell: "elman" | "gru" | "lstm". units: p. activation: f_a of an Elman cell.
    epochs: passes over the stream. streams: B
    parallel streams; window: W steps of backpropagation through time. Unset values take `DEFAULTS`.
    log(epoch, loss) is called after every epoch.
    """
    if isinstance(data, str):
        task = data.removeprefix("elman:")
        if task not in DEFAULTS:
            raise ValueError(f"unknown sequence task {data!r}: use elman:xor, elman:letters or elman:sentences")
        data = elman.load(task, seed=seed, size=size)
    task = data.name.removeprefix("elman:")
    d = DEFAULTS.get(task, DEFAULTS["sentences"])
    units = d["units"] if units is None else units
    activation = d["activation"] if activation is None else activation
    epochs = d["epochs"] if epochs is None else epochs
    lr = d["lr"] if lr is None else lr
    streams = d["streams"] if streams is None else streams
    window = d["window"] if window is None else window
    for name, v in (("units", units), ("epochs", epochs), ("streams", streams), ("window", window)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1; got {v}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr}")

    key = jax.random.key(seed)
    model = sequence_model(cell, data.k, units, data.q, data.output, activation=activation, key=key)
    xs, ys = _windows(data, streams, window)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    state_0 = model.initial_state(batch=streams)

    def window_loss(params, x, y, state):
        m = eqx.combine(params, static)
        logits, _, final = m.run(x, state)  # the B streams' windows (B, W, k) as one batch, from their states
        return m.step_loss(logits, y).mean(), final

    @jax.jit
    def epoch(params, opt_state):
        def body(carry, xy):
            params, opt_state, state = carry
            (loss, final), grads = jax.value_and_grad(window_loss, has_aux=True)(params, *xy, state)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, jax.lax.stop_gradient(final)), loss

        (params, opt_state, _), losses = jax.lax.scan(body, (params, opt_state, state_0), (xs, ys))
        return params, opt_state, losses.mean()

    start = time.perf_counter()
    history = []
    for e in range(epochs):
        params, opt_state, loss = epoch(params, opt_state)
        history.append(float(loss))
        if log is not None:
            log(e + 1, history[-1])
    config = dict(
        task=data.name,
        cell=cell,
        units=units,
        activation=activation,
        epochs=epochs,
        lr=lr,
        streams=streams,
        window=window,
        seed=seed,
        T=data.T,
    )
    return SequenceRun(eqx.combine(params, static), data, history, time.perf_counter() - start, config)


@dataclass
class Evaluation:
    """A model run once over a whole stream from a_0 = 0.

    y: (T, q) predictions as probabilities; a: (T, p) hidden states; loss: (T,) per step (nats);
    error: (T,) squared error sum_j (y_tj - target_tj)^2, the paper's measure.
    """

    data: elman.ElmanData
    y: Float[np.ndarray, "T q"]
    a: Float[np.ndarray, "T p"]
    loss: Float[np.ndarray, " T"]
    error: Float[np.ndarray, " T"]


def evaluate(model: models.SequenceModel, data: elman.ElmanData) -> Evaluation:
    """Run `model` over `data`'s stream from a_0 = 0 (a batch of one) and measure every step."""
    if data.k != model.features:
        raise ValueError(f"the model reads k={model.features} features; {data.name} has k={data.k}")
    x = jnp.asarray(data.inputs[0])
    target = jnp.asarray(data.targets[0])
    logits, a, _ = eqx.filter_jit(model.run)(x[None])
    logits, a = logits[0], a[0]
    y = model.probabilities(logits)
    loss = model.step_loss(logits, target)
    error = ((y - target) ** 2).sum(-1)
    return Evaluation(data, np.asarray(y), np.asarray(a), np.asarray(loss), np.asarray(error))


def mean_hidden_by_word(ev: Evaluation) -> tuple[tuple[str, ...], Float[np.ndarray, "V p"]]:
    """(words, means): the hidden state a_t averaged over every step whose input is that word.

    a_t is the state after reading word t, so each row is what the network makes of one word in all the
    contexts it met it in (the paper's Fig. 7).
    """
    tokens = np.array(ev.data.tokens[:-1])
    words = tuple(w for w in ev.data.vocab if (tokens == w).any())
    return words, np.stack([ev.a[tokens == w].mean(0) for w in words])


def hidden_states(model: models.SequenceModel, x: Float[Array, "T k"]) -> Float[Array, "T p"]:
    """a_1..a_T for one stream from a_0 = 0."""
    return model.run(x)[1]


def predict_ids(model: models.SequenceModel, x: Float[Array, "T k"]) -> Int[Array, " T"]:
    """The most likely next symbol after every step (softmax outputs)."""
    return jnp.argmax(model(x), axis=-1)


# ------------------------------------------------------------------------------------------ run folders

KIND = "sequence"  # config.json's "kind" for an Elman run (a classifier's is "classifier")
SEQUENCE_CONFIG = "sequence.json"  # the earlier layout's settings, still read
SEQUENCE_MODEL = "sequence.safetensors"  # and its weights


def _kind(path: Path) -> str | None:
    """The "kind" a config.json names, or None where it names none or cannot be read."""
    try:
        info = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("kind") if isinstance(info, dict) else None


def is_sequence_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a many-to-many run written by `save_sequence`: its config.json says
    "kind": "sequence", or it holds the earlier layout's sequence.json and no config.json (a folder's
    config.json says which run it holds, as `load_sequence` reads it)."""
    from rnnlab.checkpoint import CONFIG

    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file():
        return _kind(run_dir / CONFIG) == KIND
    return (run_dir / SEQUENCE_CONFIG).is_file()


def save_sequence(run: SequenceRun, run_dir: str | Path, result: dict | None = None) -> Path:
    """Write `run` into `run_dir` as a run folder: model.safetensors (the weights), then config.json
    ("kind": "sequence", the settings, loss history and the report's numbers). The stream itself is
    regenerated from its name, seed and size. A folder holding another kind of run is refused (RunError);
    the earlier layout's files, where the folder held them, are replaced."""
    from rnnlab import checkpoint

    run_dir = Path(run_dir)
    if (run_dir / checkpoint.CONFIG).is_file() and _kind(run_dir / checkpoint.CONFIG) != KIND:
        raise checkpoint.RunError(f"{run_dir / checkpoint.CONFIG}: {run_dir} holds another run (not an Elman "
                                  "sequence run); write this one into another folder")
    numbers = {k: v for k, v in (result or {}).items() if k not in ("text", "files", "tree")}
    model = run.model
    info = {
        "kind": KIND,
        "config": {**run.config, "size": len(run.data.segments), "output": model.output,
                   "layers": len(model.rnn.layers), "bidirectional": isinstance(model.layer, Bidirectional)},
        "history": run.history,
        "seconds": run.seconds,
        "result": numbers,
    }
    checkpoint.save_arrays(run_dir / checkpoint.MODEL, checkpoint.tree_arrays(model),
                           {"kind": KIND, "task": run.data.name})
    checkpoint.write_json(run_dir / checkpoint.CONFIG, info)
    for old in (SEQUENCE_CONFIG, SEQUENCE_MODEL):
        (run_dir / old).unlink(missing_ok=True)
    return run_dir


def _renamed(name: str) -> str:
    """An array's name in the earlier model (one `layer` beside the readout) as `SequenceModel` names it."""
    return ".rnn.layers[0]" + name.removeprefix(".layer") if name.startswith(".layer.") else name


def load_sequence(run_dir: str | Path) -> SequenceRun:
    """The run `save_sequence` wrote into `run_dir` (config.json and model.safetensors, or the earlier
    sequence.json and sequence.safetensors), with its stream regenerated. A file that is missing, damaged
    or of another kind of run is one line (RunError, FileNotFoundError) naming it."""
    from rnnlab import checkpoint

    run_dir = Path(run_dir)
    earlier = not (run_dir / checkpoint.CONFIG).is_file() and (run_dir / SEQUENCE_CONFIG).is_file()
    config_path = run_dir / (SEQUENCE_CONFIG if earlier else checkpoint.CONFIG)
    model_path = run_dir / (SEQUENCE_MODEL if earlier else checkpoint.MODEL)
    info = checkpoint.read_json(config_path)
    if not earlier and (not isinstance(info, dict) or info.get("kind") != KIND):
        kind = info.get("kind") if isinstance(info, dict) else None
        raise checkpoint.RunError(f"{config_path}: not an Elman sequence run (its kind is {kind!r}, not {KIND!r})")
    try:
        c = info["config"]
        data = elman.load(c["task"], seed=c["seed"], size=c["size"])
        template = sequence_model(
            c["cell"], data.k, c["units"], data.q, c["output"], activation=c["activation"],
            layers=c.get("layers", 1), bidirectional=c.get("bidirectional", False), key=jax.random.key(0)
        )
        history, seconds = list(info["history"]), float(info["seconds"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"lacks the entry {e}" if isinstance(e, KeyError) else f"holds a value it cannot use ({e})"
        raise checkpoint.RunError(f"{config_path}: {what}") from None
    arrays, _ = checkpoint.load_arrays(model_path)
    if earlier:
        arrays = {_renamed(name): a for name, a in arrays.items()}
    model = checkpoint.fill_tree(template, arrays, source=str(model_path))
    return SequenceRun(model, data, history, seconds, dict(c))
