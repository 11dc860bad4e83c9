"""What every reader returns: texts with integer labels, split into train / val / test."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Int

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Input data that cannot be read; the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass
class Split:
    """N texts and their labels (N,), ids into the dataset's label names."""

    texts: list[str]
    labels: Int[np.ndarray, " N"] | list[int]
    source: str = ""

    def __post_init__(self):
        self.labels = np.asarray(self.labels, np.int32)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Dataset:
    """A labelled text classification task. `labels[i]` names class i; `task` picks the official metric
    (a TweetEval task name such as "emotion" or "irony"; any other name is scored by macro-F1).

    descriptions: a longer text for each label (mapping.txt's further columns), or () when there are none.
    notes: one line each for what the reader decided that the user should hear (printed by the CLI).
    """

    task: str
    labels: tuple[str, ...]
    splits: dict[str, Split] = field(default_factory=dict)
    source: str = ""
    descriptions: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, split: str) -> Split:
        try:
            return self.splits[split]
        except KeyError:
            have = ", ".join(self.splits) or "none"
            raise KeyError(f"{self.source or self.task} has no {split!r} split (it has: {have})") from None

    def __contains__(self, split: str) -> bool:
        return split in self.splits


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, split on "\\n" only (tweets may hold other Unicode line breaks).

    Raises DataError naming the file (and the line of a bad byte) for a missing, empty or non-UTF-8 file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(path, f"not valid UTF-8 ({e.reason}, byte 0x{raw[e.start]:02x}); save it as UTF-8",
                        line) from None
    if not text.strip():
        raise DataError(path, "the file is empty")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def label_names(values: Iterable[str]) -> tuple[str, ...]:
    """The distinct label values, sorted: numerically when they are all integers, else as text."""
    distinct = set(values)
    if distinct and all(v.lstrip("-").isdigit() for v in distinct):
        return tuple(sorted(distinct, key=int))
    return tuple(sorted(distinct))


def official_task(name: str, labels: tuple[str, ...]) -> tuple[str, str | None]:
    """(task, note): `name` itself when the labels fit its official metric; else a name scored by macro-F1
    and a note saying why (a folder called `irony` whose labels hold no `irony` class, say)."""
    from rnnlab import metrics

    metric = metrics.official_metric(name)
    try:
        metrics.score(metric, np.zeros((len(labels), len(labels)), np.int64), labels)
    except ValueError as e:
        return f"{name} (own labels)", (f"{name}: named like a TweetEval task, whose {metric} cannot score these "
                                        f"labels ({e}): scored by macro_f1")
    return name, None


def missing_classes(dataset: Dataset) -> list[str]:
    """One note per split (val, test) that lacks labels train has: its macro-F1 counts them as F1 0."""
    notes = []
    if "train" not in dataset:
        return notes
    have = set(np.unique(dataset["train"].labels).tolist())
    for split in SPLITS[1:]:
        if split not in dataset or not len(dataset[split]):
            continue
        lacking = sorted(have - set(np.unique(dataset[split].labels).tolist()))
        if lacking:
            names = ", ".join(dataset.labels[i] for i in lacking)
            notes.append(f"warning: {split} has no text labelled {names} (train has {len(have)} labels): "
                         f"its macro-F1 counts F1 0 for each of them, so it can sit far below its accuracy")
    return notes
