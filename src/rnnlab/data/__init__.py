"""Labelled text for the classifiers: readers, a tokenizer, a vocabulary and pretrained word vectors.

    dataset = rnnlab.data.load("../shared/data/tweeteval/emotion")   # a TweetEval-format folder
    dataset = rnnlab.data.load("tweeteval:irony")                   # downloaded once, then cached
    dataset = rnnlab.data.load("tweets.csv", text_column="tweet")   # CSV / TSV / JSONL
    dataset["train"].texts, dataset["train"].labels, dataset.labels
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.data import tabular, tweeteval
from rnnlab.data.dataset import SPLITS, DataError, Dataset, Split
from rnnlab.data.embeddings import WordVectors, embedding_matrix, load_vectors
from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import PAD, UNK, Vocabulary

__all__ = [
    "PAD", "SPLITS", "UNK", "DataError", "Dataset", "Split", "Vocabulary", "WordVectors",
    "embedding_matrix", "load", "load_labelled", "load_vectors", "tokenize",
]


def load(
    source: str | Path, *, text_column: str = "text", label_column: str = "label", progress: bool = True
) -> Dataset | Any:
    """A labelled dataset from any of (the `elman:` corpora are `rnnlab.teach.elman.data.ElmanData`):

    - `tweeteval:NAME`: a TweetEval task (emotion, hate, irony, offensive, emoji, sentiment,
      stance/abortion, ...), downloaded into the user's cache on first use;
    - `elman:NAME`: one of Elman's (1990) generated corpora (see `rnnlab.teach.elman.data`);
    - a TweetEval-format folder (`train_text.txt`, `train_labels.txt`, `mapping.txt`, ...);
    - a folder of `train.csv` / `val.csv` / `test.csv` (or .tsv / .jsonl), or a single such file.
    """
    s = str(source)
    if s.startswith("tweeteval:"):
        return tweeteval.load(s.split(":", 1)[1], progress=progress)
    if s.startswith("elman:"):
        from rnnlab.teach.elman import data as elman  # the generator lives with the experiments it serves

        return elman.load(s.split(":", 1)[1])
    path = Path(source)
    if path.is_dir():
        if (path / "train_text.txt").is_file() or (path / "mapping.txt").is_file():
            return tweeteval.read_folder(path)
        files = tabular.find_split_files(path)
        if not files:
            raise DataError(path, "neither a TweetEval folder (train_text.txt, train_labels.txt, "
                            "mapping.txt) nor train/val/test .csv, .tsv or .jsonl files")
        return tabular.read_files(files, text_column, label_column)
    if path.is_file():
        return tabular.read_files({"train": path}, text_column, label_column)
    raise DataError(path, "no such file or folder (or use tweeteval:NAME, e.g. tweeteval:emotion)")


def load_labelled(
    source: str | Path, *, text_column: str = "text", label_column: str = "label", progress: bool = True
) -> Dataset:
    """`load` for what needs a label per text (evaluate, predict, tune): refuses Elman's streams."""
    if str(source).startswith("elman:"):
        raise DataError(str(source), "Elman's streams have a target at every step, not a label per text: train on "
                        "them with `rnnlab train elman:NAME --out RUN` and look with `rnnlab inspect RUN`")
    return load(source, text_column=text_column, label_column=label_column, progress=progress)
