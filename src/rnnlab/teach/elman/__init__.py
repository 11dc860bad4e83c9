"""Elman (1990), "Finding Structure in Time": the streams (`data`), the experiments (`experiments`: training,
evaluation, run folders) and their report (`views`: the figures and the category tree)."""

from rnnlab.teach.elman import data
from rnnlab.teach.elman.experiments import (
    DEFAULTS,
    DESCRIPTIONS,
    FEATURES,
    PAPER,
    Evaluation,
    SequenceRun,
    evaluate,
    hidden_states,
    is_sequence_run,
    load_sequence,
    mean_hidden_by_word,
    predict_ids,
    save_sequence,
    train_sequence,
)
from rnnlab.teach.elman.views import cluster_words, report, top_split, tree_text

__all__ = [
    "DEFAULTS", "DESCRIPTIONS", "FEATURES", "PAPER", "Evaluation", "SequenceRun", "cluster_words", "data",
    "evaluate", "hidden_states", "is_sequence_run", "load_sequence", "mean_hidden_by_word", "predict_ids",
    "report", "save_sequence", "top_split", "train_sequence", "tree_text",
]
