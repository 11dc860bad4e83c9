"""What every reader returns: texts with integer labels, split into train / val / test."""

from __future__ import annotations

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
    (a TweetEval task name such as "emotion" or "irony"; any other name is scored by macro-F1)."""

    task: str
    labels: tuple[str, ...]
    splits: dict[str, Split] = field(default_factory=dict)
    source: str = ""

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
