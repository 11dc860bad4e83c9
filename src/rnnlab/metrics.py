"""Classification scores, and each TweetEval task's official metric.

    emotion, hate, offensive, emoji   macro_f1          mean F1 over all classes
    irony                             f1_irony          F1 of the ironic class
    stance                            f1_against_favor  mean of F1(against) and F1(favor)
    sentiment                         macro_recall      mean recall over all classes
    anything else                     macro_f1

F1 of a class with no true and no predicted examples is 0 (as in scikit-learn's `zero_division=0`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Int


def confusion(y_true: Int[np.ndarray, " N"], y_pred: Int[np.ndarray, " N"], C: int) -> Int[np.ndarray, "C C"]:
    """M (C, C): M[i, j] counts examples of true class i predicted as j."""
    M = np.zeros((C, C), np.int64)
    np.add.at(M, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return M


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(a.shape, np.float64), where=b > 0)


def per_class(M: Int[np.ndarray, "C C"]) -> dict[str, np.ndarray]:
    """precision, recall, f1 and support (C,) each, from a confusion matrix."""
    tp = np.diag(M).astype(np.float64)
    predicted, actual = M.sum(axis=0), M.sum(axis=1)
    precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
    f1 = _ratio(2 * tp, predicted + actual)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def official_metric(task: str) -> str:
    """The name of a task's official metric (see the module docstring)."""
    task = task.split("/")[0].lower()
    official = {"irony": "f1_irony", "stance": "f1_against_favor", "sentiment": "macro_recall"}
    return official.get(task, "macro_f1")


def _class(labels: Sequence[str], *names: str) -> int:
    for name in names:
        if name in labels:
            return list(labels).index(name)
    raise ValueError(f"no class named {' or '.join(map(repr, names))} among the labels {list(labels)}")


def score(metric: str, M: Int[np.ndarray, "C C"], labels: Sequence[str]) -> float:
    """The value of `metric` (a name from `official_metric`, or "accuracy") for confusion matrix M."""
    stats = per_class(M)
    if metric == "macro_f1":
        return float(stats["f1"].mean())
    if metric == "macro_recall":
        return float(stats["recall"].mean())
    if metric == "accuracy":
        return float(np.trace(M) / max(M.sum(), 1))
    if metric == "f1_irony":
        return float(stats["f1"][_class(labels, "irony", "ironic")])
    if metric == "f1_against_favor":
        return float((stats["f1"][_class(labels, "against")] + stats["f1"][_class(labels, "favor")]) / 2)
    raise ValueError(f"unknown metric {metric!r}")


def report(
    y_true: Int[np.ndarray, " N"], y_pred: Int[np.ndarray, " N"], labels: Sequence[str], task: str = ""
) -> dict:
    """Everything about one set of predictions, JSON-ready: the official metric (name and value),
    accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows: true)."""
    C = len(labels)
    M = confusion(y_true, y_pred, C)
    stats = per_class(M)
    metric = official_metric(task)
    return {
        "metric": metric,
        "score": score(metric, M, labels),
        "accuracy": score("accuracy", M, labels),
        "macro_f1": score("macro_f1", M, labels),
        "per_class": {
            name: {k: (int(v[i]) if k == "support" else float(v[i])) for k, v in stats.items()}
            for i, name in enumerate(labels)
        },
        "confusion": M.tolist(),
        "labels": list(labels),
        "n": int(M.sum()),
    }
