"""Speed of the tokenizer: every text of a task's three splits, against the tokenizer as first written.

    python benchmarks/tokenize_speed.py                    # TweetEval hate (12 970 tweets)
    python benchmarks/tokenize_speed.py --task umsab/french --out /tmp/tokenize.json

`rnnlab` is `rnnlab.data.tokenize.tokenize` with its per-chunk cache emptied first (a fresh process, as
`rnnlab train` sees it) and again with the cache as the first pass left it (as a long-lived `rnnlab serve`
sees it); `reference` is tests/tokenize_reference.py, the tokenizer as first written, which the package's
must match token for token (tests/test_tokenize.py). Each figure is the median of --repeats passes, the
contenders taking turns. JSON on stdout, and in --out where given.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _reference():
    spec = importlib.util.spec_from_file_location("tokenize_reference", REPO / "tests" / "tokenize_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tokenize


def texts(task: str) -> list[str]:
    from rnnlab.data import load

    dataset = load(DATA / (task if "/" in task else f"tweeteval/{task}"))
    return [t for split in ("train", "val", "test") if split in dataset for t in dataset[split].texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="hate", help="a folder under ../shared/data (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="passes per contender (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    module = importlib.import_module("rnnlab.data.tokenize")  # the module (rnnlab.data.tokenize is the function)
    reference, new = _reference(), module.tokenize
    corpus = texts(args.task)

    def run(fn, clear: bool) -> float:
        if clear:
            module.clear_cache()
        start = time.perf_counter()
        for t in corpus:
            fn(t)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"reference": [], "rnnlab_cold": [], "rnnlab_warm": []}
    for _ in range(args.repeats):
        times["reference"].append(run(reference, False))
        times["rnnlab_cold"].append(run(new, True))
        times["rnnlab_warm"].append(run(new, False))
    seconds = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "task": args.task, "texts": len(corpus), "repeats": args.repeats,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "us_per_text": {k: round(1e6 * v / len(corpus), 1) for k, v in seconds.items()},
        "ratios": {"cold_vs_reference": round(seconds["reference"] / seconds["rnnlab_cold"], 2),
                   "warm_vs_reference": round(seconds["reference"] / seconds["rnnlab_warm"], 2)},
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
