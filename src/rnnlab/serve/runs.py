"""The runs a server holds, loaded once at start, and what each answers: predict and trace.

    load_runs(["runs/emotion", "demo-out/elman-sentences-run"])   # {name: Classifier | Sequence}

A `Classifier` is a run from `rnnlab train` (`rnnlab.load_run`): labels for texts, and the states
a_t of every layer and direction. A `Sequence` is an Elman (1990) run from `rnnlab demo` or `rnnlab train
elman:NAME` (config.json's kind "sequence", or the earlier sequence.json; `teach.elman.experiments.load_sequence`):
y_t at every step, the next symbol, and for the sentences the tree of the words' mean hidden states. A
folder that is neither stops the start with a `ServeError`.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from rnnlab.checkpoint import CONFIG
from rnnlab.data.batches import bucket_edges, plan
from rnnlab.data.tokenize import tokenize
from rnnlab.inference import Run, predict_proba
from rnnlab.layers import Bidirectional
from rnnlab.models import TextClassifier
from rnnlab.runs import load_run as load_any_run
from rnnlab.serve.limits import RequestError
from rnnlab.teach.elman import experiments

MAX_SEQUENCE_TOKENS = 500  # tokens of one /trace on an Elman run (a classifier reads at most its maxlen)
BATCH_SIZES = (8, 32, 128, 256)  # rows of a compiled /predict batch: the smallest that holds a bucket's texts


class ServeError(Exception):
    """A run folder the server cannot start with; the message names the folder and the reason."""


def _round(a) -> list:
    return np.round(np.asarray(a, np.float64), 6).tolist()


@eqx.filter_jit
def layer_states(model: TextClassifier, tokens: Int[Array, " T"], L: Int[Array, ""]) -> list[Array]:
    """a_t of every layer of `model` for one text padded to T with length L: [(T, q_l)] (q_l = p, or 2p
    with two directions, forward rows first). Steps past L hold zeros, as in the batch."""
    x = model.embed(tokens[None])
    out = []
    for layer in model.rnn.layers:
        x, _ = layer(x, L[None])
        out.append(x[0])
    return out


class Classifier:
    """A text classifier run: `predict(texts)` and `trace(text)`, one compiled shape each (texts are
    padded to the run's maxlen)."""

    kind = "classifier"

    def __init__(self, name: str, run: Run):
        self.name, self.run = name, run
        self.bidirectional = isinstance(run.model.rnn.layers[-1], Bidirectional)

    def info(self) -> dict:
        from rnnlab.teach.explain import explain

        c = self.run.model.config
        return {
            "name": self.name, "kind": self.kind, "task": self.run.task, "labels": list(self.run.labels),
            "cell": c.cell, "k": c.k, "p": c.units, "layers": c.layers, "bidirectional": c.bidirectional,
            "pooling": c.pooling, "maxlen": self.run.maxlen, "members": len(self.run.members),
            "parameters": explain(self.run.model).total,
        }

    def predict(self, texts: list[str]) -> list[dict]:
        """{"label", "probabilities"} for each text. Texts go to length buckets as in `Run.predict_proba`,
        each bucket in batches of the smallest of BATCH_SIZES rows that holds it (a text alone, or the
        few long tweets of a request, are not padded to 256 rows)."""
        ids, lengths = self.run.encode(texts)
        proba = np.zeros((len(texts), len(self.run.labels)), np.float32)
        for _, rows in plan(lengths, BATCH_SIZES[-1], bucket_edges(ids.shape[1]), None):
            size = next(b for b in BATCH_SIZES if b >= len(rows))
            proba[rows] = predict_proba(self.run.members, ids[rows], lengths[rows], size)
        labels = self.run.labels
        return [{"label": labels[int(np.argmax(row))],
                 "probabilities": {name: round(float(v), 6) for name, v in zip(labels, row, strict=True)}}
                for row in proba]

    def trace(self, text: str) -> dict:
        """Tokens, a_t per layer and direction, and y_t (the label probabilities after t tokens) where
        the last layer reads one way; with two directions y_t has read the whole text, so it is null."""
        run = self.run
        tokens = tokenize(text)[: run.maxlen] or ["<unk>"]
        L = len(tokens)
        ids = np.zeros(run.maxlen, np.int32)
        ids[:L] = run.vocab.encode(tokens)
        ids, length = jnp.asarray(ids), jnp.asarray(L, jnp.int32)
        layers = []
        for i, (layer, a) in enumerate(zip(run.model.rnn.layers, layer_states(run.model, ids, length), strict=True)):
            a = np.asarray(a[:L])
            if isinstance(layer, Bidirectional):
                p = layer.forward.units
                layers += [{"layer": i, "direction": "forward", "a": _round(a[:, :p])},
                           {"layer": i, "direction": "backward", "a": _round(a[:, p:])}]
            else:
                layers.append({"layer": i, "direction": "forward", "a": _round(a)})
        # y_t as Run.trace gives it: the members' mean probabilities for the text read up to token t
        y = np.mean([np.asarray(m.trace(ids, length)[1][:L]) for m in run.members], axis=0)
        out = {"tokens": tokens, "layers": layers, "outputs": list(run.labels),
               "prediction": run.labels[int(np.argmax(y[-1]))], "probabilities": _round(y[-1])}
        if self.bidirectional:
            out["y"] = None
            out["y_note"] = ("the model reads the text both ways: its backward units at step t have already "
                             "read tokens t..T, so there is no prediction 'after t tokens'")
        else:
            out["y"] = _round(y)
        return out

    def warm(self) -> None:
        """Compile what a request runs: predict at each batch size in each length bucket, and trace."""
        long = " ".join(["a"] * self.run.maxlen)
        for rows in BATCH_SIZES:
            self.predict(["a"] * rows + [long] * rows)
        self.trace("a")


class Sequence:
    """An Elman (1990) many-to-many run: `trace(text)` gives a_t and y_t (the next symbol) per step."""

    kind = "sequence"

    def __init__(self, name: str, run: experiments.SequenceRun):
        self.name, self.run = name, run
        self.task = run.data.name.split(":", 1)[-1]
        self.tree = word_tree(run) if self.task == "sentences" else None

    def info(self) -> dict:
        from rnnlab.teach.explain import explain

        model, explained = self.run.model, explain(self.run.model)
        return {
            "name": self.name, "kind": self.kind, "task": self.run.data.name, "outputs": list(self.run.data.vocab),
            "cell": explained.cells[0].kind, "k": model.features, "p": model.units,
            "layers": len(model.rnn.layers), "bidirectional": isinstance(model.rnn.layers[-1], Bidirectional),
            "parameters": explained.total, "example": EXAMPLES.get(self.task, ""),
            "tree": self.tree,
        }

    def predict(self, texts: list[str]) -> list[dict]:
        raise RequestError(422, f"run {self.name!r} is an Elman sequence model: it predicts the next symbol at "
                                "every step, not a label; use POST /trace")

    def trace(self, text: str) -> dict:
        from rnnlab.teach.states import inspect_sequence

        words = text.split()
        if self.task in ("letters", "xor") and len(words) == 1:
            words = list(words[0])
        if not words:
            raise RequestError(422, f'"text" is empty: give words of {self.run.data.name}, e.g. '
                                    f'"{EXAMPLES.get(self.task, "")}"')
        if len(words) > MAX_SEQUENCE_TOKENS:
            raise RequestError(422, f'"text" has {len(words):,} tokens; at most {MAX_SEQUENCE_TOKENS} per trace')
        try:
            ins = inspect_sequence(self.run.model, self.run.data, words)
        except ValueError as e:
            raise RequestError(422, str(e)) from None
        return {"tokens": list(ins.tokens), "layers": [{"layer": 0, "direction": "forward", "a": _round(ins.a.T)}],
                "outputs": list(ins.outputs), "y": _round(ins.y), "predictions": ins.predictions()}

    def warm(self) -> None:
        self.trace(EXAMPLES.get(self.task, ""))


EXAMPLES = {"xor": "110011101", "letters": "badiiguuuba", "sentences": "man eat cookie dragon smash glass"}


def word_tree(run: experiments.SequenceRun) -> dict:
    """The clustering of the words' mean hidden states over the run's stream (Elman's Fig. 7) as nested
    {"distance", "children": [left, right]}, leaves {"word", "category", "noun"}."""
    from scipy.cluster.hierarchy import to_tree

    from rnnlab.teach.elman.data import NOUNS
    from rnnlab.teach.elman.views import cluster_words

    ev = experiments.evaluate(run.model, run.data)
    words, means = experiments.mean_hidden_by_word(ev)
    categories = run.data.categories

    def walk(node) -> dict:
        if node.is_leaf():
            w = words[node.id]
            return {"word": w, "category": "/".join(categories.get(w, ())), "noun": w in NOUNS}
        return {"distance": round(float(node.dist), 4), "children": [walk(node.get_left()), walk(node.get_right())]}

    return walk(to_tree(cluster_words(words, means)))


def load_runs(folders: list[str | Path], *, warm: bool = True) -> dict[str, Classifier | Sequence]:
    """{name: run} for each folder (named by the folder, made unique with -2, -3, ...). Raises
    ServeError naming the first folder that cannot be read."""
    runs: dict[str, Classifier | Sequence] = {}
    for folder in folders:
        path = Path(folder)
        name, n = path.resolve().name or "run", 2
        while name in runs:
            name, n = f"{path.resolve().name}-{n}", n + 1
        runs[name] = _load(name, path)
        if warm:
            try:
                runs[name].warm()
            except Exception as e:  # a run that loads but cannot predict: its config or weights are off
                raise ServeError(f"{path}: the run loads but cannot predict: {e}") from None
    return runs


def _load(name: str, path: Path) -> Classifier | Sequence:
    if not path.is_dir():
        raise ServeError(f"{path}: no such run folder (write one with `rnnlab train` or `rnnlab demo`)")
    try:
        if not (path / CONFIG).is_file() and not experiments.is_sequence_run(path):
            raise ServeError(f"{path}: not a run folder: it has no {CONFIG} (from `rnnlab train` or "
                             "`rnnlab demo`)")
        run = load_any_run(path)
        return Sequence(name, run) if isinstance(run, experiments.SequenceRun) else Classifier(name, run)
    except ServeError:
        raise
    except KeyError as e:
        raise ServeError(f"{path}: cannot read the run: {CONFIG} lacks the entry {e}") from None
    except Exception as e:  # a corrupt file may fail in json, safetensors or the model's shapes
        raise ServeError(f"{path}: cannot read the run: {e}") from None
