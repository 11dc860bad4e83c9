"""Speed of the TF-IDF floor that `rnnlab train` fits after every run: `baseline.floor_report` per task.

    python benchmarks/floor_speed.py                              # emotion, hate, irony, umsab/english
    python benchmarks/floor_speed.py --tasks all --out /tmp/floor.json
    python benchmarks/floor_speed.py --profile hate               # the vectoriser and each fit, one by one

Per task: the seconds of `floor_report(train, val, test, ...)` (the median of --repeats calls), beside the
same call with scikit-learn's own `TfidfVectorizer` for both feature sets (the peer; the two take turns),
whether the two report exactly the same, and what rnnlab's reports (the chosen C, the validation score by
C, the validation and test scores), after one untimed floor on irony. JSON on stdout, and in --out where
given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT = ("tweeteval/emotion", "tweeteval/hate", "tweeteval/irony", "umsab/english")
ALL = (*DEFAULT, "umsab/french", "umsab/italian", "umsab/spanish")


def _dataset(task: str):
    from rnnlab.data import load

    return load(DATA / (task if "/" in task else f"tweeteval/{task}"))


def stock_features():
    """`baseline.features()` built of scikit-learn's own `TfidfVectorizer` alone: the peer."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True,
                                 min_df=2)),
    ])


def time_task(task: str, repeats: int) -> dict:
    """`floor_report` as rnnlab runs it, and with `stock_features` in its place, taking turns."""
    from rnnlab import baseline

    d = _dataset(task)
    own = baseline.features
    seconds: dict[str, list[float]] = {"rnnlab": [], "stock_vectorizers": []}
    reports = {}
    for _ in range(repeats):
        for name, features in (("rnnlab", own), ("stock_vectorizers", stock_features)):
            baseline.features = features
            try:
                start = time.perf_counter()
                report = baseline.floor_report(d["train"], d["val"], d["test"], d.labels, d.task)
                seconds[name].append(time.perf_counter() - start)
            finally:
                baseline.features = own
            reports[name] = {"C": report["C"], "val_by_C": report["val_by_C"], "val": report["val"],
                             "test": report["test"]}
    median = {k: statistics.median(v) for k, v in seconds.items()}
    report = reports["rnnlab"]
    return {"train": len(d["train"]), "seconds": {k: round(v, 3) for k, v in median.items()},
            "all_seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
            "speedup": round(median["stock_vectorizers"] / median["rnnlab"], 2),
            "same_report": reports["rnnlab"] == reports["stock_vectorizers"], "C": report["C"],
            "val_by_C": {c: round(s, 4) for c, s in report["val_by_C"].items()},
            "val": round(report["val"], 4), "test": round(report["test"], 4)}


def profile(task: str) -> dict:
    """The floor's pieces timed one by one, as `baseline.fit_floor` runs them (one thread)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from rnnlab import baseline

    d = _dataset(task)
    out: dict = {"task": task, "train": len(d["train"])}
    with threadpool_limits(1):
        baseline.features().fit_transform(d["val"].texts)  # untimed: the imports and first calls
        start = time.perf_counter()
        vectorizer = baseline.features()
        X = vectorizer.fit_transform(d["train"].texts)
        out["vectorise_train_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        X_val = vectorizer.transform(d["val"].texts)
        out["vectorise_val_s"] = round(time.perf_counter() - start, 3)
        out["features"], out["nonzeros"] = X.shape[1], int(X.nnz)
        for C in baseline.CS:
            start = time.perf_counter()
            clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=0)
            clf.fit(X, d["train"].labels)
            out[f"fit_C{C}_s"] = round(time.perf_counter() - start, 3)
            out[f"fit_C{C}_iterations"] = int(clf.n_iter_.max())
        start = time.perf_counter()
        clf.predict(X_val)
        out["predict_val_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        vectorizer.transform(d["test"].texts)
        out["vectorise_test_s"] = round(time.perf_counter() - start, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(DEFAULT),
                        help="comma-separated folders under ../shared/data, or 'all' (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="calls per task (default: %(default)s)")
    parser.add_argument("--profile", metavar="TASK", help="time the pieces of one task's floor instead")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.profile:
        out = profile(args.profile)
    else:
        tasks = ALL if args.tasks == "all" else tuple(args.tasks.split(","))
        from rnnlab import baseline

        d = _dataset("tweeteval/irony")  # untimed: the first call's imports and first runs
        baseline.floor_report(d["train"], d["val"], None, d.labels, d.task)
        out = {"python": platform.python_version(), "load_average": round(os.getloadavg()[0], 2),
               "repeats": args.repeats, "tasks": {}}
        for task in tasks:
            out["tasks"][task] = time_task(task, args.repeats)
            print(task, json.dumps(out["tasks"][task]), flush=True)
        out["load_average_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
