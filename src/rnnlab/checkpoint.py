"""Runs on disk: safetensors for arrays, JSON for everything else, every file written atomically.

A run folder holds
    config.json         hyperparameters, model shape, vocabulary, label names, task, metric, and a
                        fingerprint of the data the run is trained on
    model.safetensors   the best weights (E, each layer's W_a, U_a, b_a, ..., W_y, b_y) of each member
                        of the ensemble, named `[i].E`, `[i].rnn.layers[0]...` for member i; written at
                        the end of the first epoch: a run without it has no trained model yet
    state.safetensors   while training: model, optimiser state and best weights, with the loop's position
                        in its metadata, so that `--resume` continues where it stopped (removed when the
                        run finishes, unless kept)
    metrics.json        validation and test scores: written last, it marks a finished run
    .lock               the id of the process training the run, which holds an exclusive lock on it

Nothing is pickled: a model is rebuilt from its config and its arrays are filled in by name. Each array's
SHA-256 is stored in its file's metadata and checked on load. A file is written to a temporary file in
the same folder, fsynced, renamed over the old one, and the folder fsynced: a reader or a crash sees the
old file or the new one, never half. Every file that cannot be used is refused with one line naming it.
A training writes its checkpoints through a `Writer`: the same files, from one background thread.

    run = load_run("runs/emotion")                 # an rnnlab.inference.Run, ready to predict
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from rnnlab._files import RunError, atomic_write
from rnnlab._files import fsync_dir as fsync_dir  # re-exported: runs write through it
from rnnlab.data.vocab import Vocabulary
from rnnlab.inference import KIND, Members, Run
from rnnlab.inference import predict_proba as predict_proba  # re-exported: inference lives in rnnlab.inference
from rnnlab.models import ModelConfig, TextClassifier

CONFIG = "config.json"
MODEL = "model.safetensors"
STATE = "state.safetensors"
METRICS = "metrics.json"
LOCK = ".lock"
RUN_FILES = (CONFIG, MODEL, STATE, METRICS)

# bytes per element of the safetensors dtypes a run may hold
_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
                "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class RunLockedError(RunError):
    """Another process holds the run folder's lock: it is training that run now."""


def remove_orphans(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files a killed write left in `run_dir` (call it holding the run's lock)."""
    removed = []
    for name in RUN_FILES:
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive OS lock (flock) on `run_dir` for the life of the block, so that one process at a
    time trains the run; another process (or another `lock` of the same folder) is refused at once with
    `RunLockedError`, naming the holder's process id. The OS releases the lock when its holder dies."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run folder: choose another --out")
    path = run_dir / LOCK
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise RunError(f"{run_dir}: cannot make or lock the run folder ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunLockedError(f"{run_dir} is being trained by process {holder} (it holds the lock {path}): "
                            "wait for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield run_dir
        except BaseException:
            # a training refused before it wrote anything leaves no folder behind it
            if created and [q.name for q in run_dir.iterdir()] == [LOCK]:
                path.unlink(missing_ok=True)
                run_dir.rmdir()
            raise
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def _contiguous(a: Any) -> np.ndarray:
    """`a` as a C-ordered NumPy array, copied only where it is not one already (its shape kept, 0-d too)."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else np.array(a, order="C")


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(_contiguous(a).data).hexdigest()


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """A safetensors file of `arrays`, with `metadata` (JSON) and each array's SHA-256 in its header."""
    arrays = {k: _contiguous(v) for k, v in arrays.items()}
    meta = {"sha256": json.dumps({k: _digest(v) for k, v in arrays.items()}, sort_keys=True)}
    if metadata is not None:
        meta["json"] = json.dumps(metadata)
    atomic_write(path, st_save(arrays, metadata=meta))


class Writer:
    """Files written in one background thread, one after another in the order asked, so that a training
    goes on while its checkpoint is hashed, written and synced (each file atomic, as `save_arrays`).

        with Writer() as writer:
            writer.save_arrays(path, arrays, metadata)   # host copies taken now; returns before the write
        # leaving waits for the last write; a write's error (a RunError) is raised at the next call or here

    At most one write is in flight: a call waits for the one before it. Not for use from two threads."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rnnlab-writer")
        self._pending = None

    def save_arrays(self, path: str | Path, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> None:
        """`save_arrays(path, arrays, metadata)` in the background; the arrays and the metadata are copied
        first, so that they (a training step's buffers, donated to the next; the history) may change as
        soon as this returns."""
        self.wait()  # first: the write before holds its own copies until it is done
        copies = {k: np.array(v, order="C", copy=True) for k, v in arrays.items()}
        meta = None if metadata is None else json.loads(json.dumps(metadata))  # as it is now, not when written
        self._pending = self._pool.submit(save_arrays, path, copies, meta)

    def save_model(self, path: str | Path, members: Members, epoch: int | None = None) -> None:
        """`save_model` in the background."""
        self.save_arrays(path, tree_arrays(members), _model_meta(members, epoch))

    def wait(self) -> None:
        """Until the write in flight is done; raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the error on its way out wins; the file in flight is finished
            self.close()


# -- reading -----------------------------------------------------------------------------------------------

def read_json(path: str | Path) -> Any:
    """The JSON in `path`; a missing file, bad UTF-8 or bad JSON is one line naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (is {path.parent} a run folder written by `rnnlab train`?)")
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RunError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None


def _check_header(path: Path, raw: bytes) -> dict:
    """The header of the safetensors bytes `raw`, each tensor's entry checked against the file's size."""
    def bad(why: str) -> RunError:
        return RunError(f"{path}: {why}")

    if len(raw) < 8:
        raise bad(f"cut short ({len(raw)} bytes): not a safetensors file")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise bad(f"cut short or not a safetensors file: its header claims {n} bytes, "
                  f"the file has {len(raw) - 8} after the length")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    size = len(raw) - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            if not isinstance(t, dict) or not all(isinstance(v, str) for v in t.values()):
                raise bad("its metadata is not a map of strings")
            continue
        if not (isinstance(t, dict) and isinstance(t.get("shape"), list) and isinstance(t.get("data_offsets"), list)
                and len(t["data_offsets"]) == 2
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                        for d in (*t["shape"], *t["data_offsets"]))):
            raise bad(f"the entry of {name!r} is malformed")
        if t.get("dtype") not in _DTYPE_SIZES:
            raise bad(f"{name!r} has an unknown dtype {t.get('dtype')!r}")
        start, end = t["data_offsets"]
        need = math.prod(t["shape"]) * _DTYPE_SIZES[t["dtype"]]
        if not start <= end <= size:
            raise bad(f"cut short: {name!r} lies at bytes {start}..{end} of a data block of {size}")
        if end - start != need:
            raise bad(f"{name!r} of shape {tuple(t['shape'])} needs {need} bytes; its entry gives {end - start}")
    return header


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], Any]:
    """(arrays, metadata) of a safetensors file written by `save_arrays`, each array checked against its
    stored SHA-256 (files written before checksums were stored are read unchecked)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    header = _check_header(path, raw)
    stored = header.get("__metadata__", {})
    try:
        meta = json.loads(stored.get("json", "null"))
        sums = json.loads(stored["sha256"]) if "sha256" in stored else None
    except ValueError as e:
        raise RunError(f"{path}: its metadata is not valid JSON ({e})") from None
    try:
        arrays = st_load(raw)
    except Exception as e:  # safetensors' own checks: the header was checked above, so this is rare
        raise RunError(f"{path}: not a readable safetensors file ({e})") from None
    if sums is not None:
        if not isinstance(sums, dict) or set(sums) != set(arrays):
            raise RunError(f"{path}: its checksums do not list the arrays it holds")
        for name, a in arrays.items():
            if _digest(a) != sums[name]:
                raise RunError(f"{path}: {name!r} does not match its SHA-256: the file was damaged or "
                               "changed after it was written")
    return arrays, meta


def tree_arrays(tree: PyTree, prefix: str = "") -> dict[str, np.ndarray]:
    """{name: array} for every array leaf, named by its path: prefix + `.rnn.layers[0].forward.cell.W_a`."""
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in leaves if leaf is not None}


def fill_tree(template: PyTree, arrays: dict[str, np.ndarray], prefix: str = "", source: str = "") -> PyTree:
    """`template` with each array leaf replaced by arrays[its name]; names, shapes and dtypes must all
    match, and the file may hold no array (under `prefix`) the template lacks. The template's leaves may be
    arrays or `jax.ShapeDtypeStruct`s (from `eqx.filter_eval_shape`)."""
    arrays_part, static = eqx.partition(template, lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct))
    paths, treedef = jax.tree_util.tree_flatten_with_path(arrays_part)
    leaves, used = [], set()
    for path, leaf in paths:
        name = prefix + jax.tree_util.keystr(path)
        if name not in arrays:
            raise RunError(f"{source}: no array {name!r}; the file does not match the config")
        value = arrays[name]
        if value.shape != leaf.shape:
            raise RunError(f"{source}: {name!r} has shape {value.shape}, the config gives {leaf.shape}")
        if value.dtype != np.dtype(leaf.dtype):
            raise RunError(f"{source}: {name!r} has dtype {value.dtype}, the model's is {np.dtype(leaf.dtype)}")
        leaves.append(jnp.asarray(value))
        used.add(name)
    extra = sorted(k for k in arrays if k.startswith(prefix) and k[len(prefix):][:1] in ("", "[", ".")
                   and k not in used)
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise RunError(f"{source}: holds arrays the config does not have: {', '.join(map(repr, extra[:3]))}{more}")
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


_INFO = {"config": dict, "model": dict, "labels": list, "vocab": list, "task": str, "metric": str}
_MODEL_INTS = ("vocab_size", "classes", "k", "units", "layers")


def read_info(run_dir: str | Path) -> dict:
    """config.json of a classifier's run folder, checked: its kind ("classifier", or none), its entries, the
    model's keys and sizes, and that the label names and vocabulary agree with the model's classes and rows."""
    path = Path(run_dir) / CONFIG
    info = read_json(path)

    def bad(why: str) -> RunError:
        return RunError(f"{path}: {why}")

    if not isinstance(info, dict):
        raise bad(f"expected a JSON object; got {type(info).__name__}")
    if info.get("kind", KIND) != KIND:  # a config.json without a kind is a classifier's (runs written before it)
        raise bad(f"'kind' is {info['kind']!r}: not a classifier's run (the runs of `rnnlab train DATA` have "
                  f"{KIND!r})")
    for key, kind in _INFO.items():
        if key not in info:
            raise bad(f"no {key!r} entry")
        if not isinstance(info[key], kind):
            raise bad(f"{key!r} should be a {kind.__name__}; got {type(info[key]).__name__}")
    model = info["model"]
    unknown = sorted(set(model) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise bad(f"unknown key(s) in 'model': {', '.join(unknown)}")
    for key in _MODEL_INTS:
        value = model.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"'model' needs {key!r} as a whole number >= 1; got {value!r}")
    members = info.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise bad(f"'members' should be a whole number >= 1; got {members!r}")
    if "classes" not in model or "vocab_size" not in model:
        raise bad("'model' needs 'vocab_size' and 'classes'")
    if len(info["labels"]) != model["classes"]:
        raise bad(f"{len(info['labels'])} labels but the model has {model['classes']} classes")
    if len(info["vocab"]) != model["vocab_size"]:
        raise bad(f"a vocabulary of {len(info['vocab'])} tokens but the model has {model['vocab_size']} rows")
    if not all(isinstance(x, str) for x in (*info["labels"], *info["vocab"])):
        raise bad("labels and vocabulary should be strings")
    maxlen = info["config"].get("maxlen", 64)
    if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
        raise bad(f"config 'maxlen' (T at most) should be a whole number >= 1; got {maxlen!r}")
    return info


def read_state(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, position) of a state.safetensors; one line naming the file when it cannot be resumed."""
    arrays, meta = load_arrays(path)
    need = ("epoch", "step_in_epoch", "global_step", "best_score", "best_epoch", "bad_epochs", "history", "elapsed")
    if not isinstance(meta, dict) or any(k not in meta for k in need):
        raise RunError(f"{path}: no training position in its metadata (it needs {', '.join(need)}): "
                       "not a checkpoint written by `rnnlab train`")
    return arrays, meta


def save_config(
    run_dir: str | Path, model_config: ModelConfig, members: int, config: dict, vocab: Vocabulary,
    labels: tuple[str, ...], task: str, metric: str, data: dict | None = None,
) -> None:
    """Write config.json (atomically) into `run_dir`; `data` describes the data trained on (source,
    fingerprint), so that a resume can check it is given the same."""
    info = {"kind": KIND, "config": config, "model": model_config.to_dict(), "members": members, "task": task,
            "metric": metric, "labels": list(labels), "vocab": vocab.tokens}
    if data is not None:
        info["data"] = data
    write_json(Path(run_dir) / CONFIG, info)


def save_run(
    run_dir: str | Path, members: Members | TextClassifier, config: dict, vocab: Vocabulary,
    labels: tuple[str, ...], task: str, metric: str, data: dict | None = None,
) -> None:
    """Write config.json and model.safetensors (atomically each) into `run_dir`."""
    if isinstance(members, TextClassifier):
        members = (members,)
    save_config(run_dir, members[0].config, len(members), config, vocab, labels, task, metric, data)
    save_model(Path(run_dir) / MODEL, members)


def save_model(path: str | Path, members: Members, epoch: int | None = None) -> None:
    save_arrays(path, tree_arrays(members), _model_meta(members, epoch))


def _model_meta(members: Members, epoch: int | None) -> dict:
    meta = {"model": members[0].config.to_dict(), "members": len(members)}
    if epoch is not None:
        meta["epoch"] = epoch
    return meta


def load_run(run_dir: str | Path) -> Run:
    """The trained classifier in `run_dir` (config.json + model.safetensors), ready to predict. A folder
    that is not a run, a run with no finished epoch, or a file that is cut, malformed, damaged or holds
    NaN weights is refused with one line naming the file."""
    run_dir = Path(run_dir)
    info = read_info(run_dir)
    model_path = run_dir / MODEL
    if not model_path.is_file():
        raise RunError(f"{run_dir}: no {MODEL}: the run has not finished its first epoch (continue it with "
                       f"`rnnlab train DATA --out {run_dir} --resume`)")
    try:
        model_config = ModelConfig(**info["model"])
        template = tuple(eqx.filter_eval_shape(lambda: TextClassifier(model_config, None, key=jax.random.key(0)))
                         for _ in range(int(info.get("members", 1))))
    except (TypeError, ValueError) as e:
        raise RunError(f"{run_dir / CONFIG}: the model it describes cannot be built ({e})") from None
    arrays, _ = load_arrays(model_path)
    members = fill_tree(template, arrays, source=str(model_path))
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise RunError(f"{model_path}: {name!r} holds NaN or inf values")
    return Run(members, info["config"], Vocabulary(info["vocab"]), tuple(info["labels"]), info["task"],
               info["metric"], run_dir)
