"""Speed of `rnnlab serve`: /predict of 200 tweets, and latency and throughput under 16 concurrent clients.

    python benchmarks/serve_speed.py                       # the default classifier's shapes, untrained
    python benchmarks/serve_speed.py --run runs/emotion --out /tmp/serve.json

The server runs in its own process (`rnnlab serve RUN --port 0`, loopback), so that its memory is its own;
the clients are threads here, each with its own connection. Timings are the clients' (HTTP and JSON
included); `in_process_ms` is `Run.predict_proba` on the same 200 texts without the server, for the
difference, and `tokenize_ms` the part of it that turns the texts into ids. Without --run, a classifier
with `rnnlab train`'s default shapes (bidirectional GRU, 64 units a direction, k=50, max-pooling) is saved
untrained: its speed is a trained one's. Tweets are TweetEval
emotion's validation texts where ../shared/data is present, else generated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
TWEETS = REPO.parent / "shared" / "data" / "tweeteval" / "emotion" / "val_text.txt"


def tweets(n: int) -> list[str]:
    if TWEETS.is_file():
        lines = [t for t in TWEETS.read_text(encoding="utf-8").split("\n") if t.strip()]
        return (lines * (n // len(lines) + 1))[:n]
    rng = np.random.default_rng(0)
    words = ["so", "happy", "today", "i", "love", "this", "what", "a", "great", "day", "sad", "tired", "awful"]
    return [" ".join(rng.choice(words, rng.integers(5, 30))) for _ in range(n)]


def default_run(folder: Path) -> Path:
    """An untrained classifier with the default configuration's shapes, and a vocabulary from the tweets."""
    import jax

    from rnnlab.checkpoint import save_run
    from rnnlab.data.tokenize import tokenize
    from rnnlab.data.vocab import Vocabulary
    from rnnlab.models import TextClassifier
    from rnnlab.train import Config

    c = Config()
    words = sorted({w for t in tweets(3000) for w in tokenize(t)})
    vocab = Vocabulary(["<pad>", "<unk>", *words])
    model = TextClassifier(c.model_config(len(vocab), 4, k=50), key=jax.random.key(0))
    save_run(folder, model, {"maxlen": c.maxlen}, vocab, ("anger", "joy", "optimism", "sadness"), "emotion",
             "macro_f1")
    return folder


def start(run: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", "from rnnlab.cli import main; main()", "serve", str(run), "--port", "0",
               "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the server did not start: {proc.stderr.read()}")
    return proc, json.loads(line)["url"]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(client: httpx.Client, texts: list[str]) -> float:
    t0 = time.perf_counter()
    r = client.post("/predict", json={"texts": texts})
    elapsed = time.perf_counter() - t0
    if r.status_code != 200 or len(r.json()["predictions"]) != len(texts):
        raise SystemExit(f"/predict answered {r.status_code}: {r.text[:200]}")
    return elapsed * 1e3


def concurrent(url: str, texts: list[str], per_request: int, clients: int, requests: int) -> dict:
    """`clients` threads, each with its own connection, sending `requests` requests in all."""
    local = threading.local()

    def one(i: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
        start = (i * per_request) % (len(texts) - per_request)
        return timed(local.client, texts[start : start + per_request])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients * 2)))  # every connection opened and warm
        t0 = time.perf_counter()
        latencies = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - t0
    return {"clients": clients, "texts_per_request": per_request, "requests": requests,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "requests_per_s": requests / wall, "texts_per_s": requests * per_request / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a run folder (default: the default shapes, untrained)")
    parser.add_argument("--texts", type=int, default=200, help="texts in the timed /predict")
    parser.add_argument("--repeats", type=int, default=30, help="timed /predict calls of --texts texts")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=800, help="requests sent by the concurrent clients")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or default_run(Path(tmp) / "default")
        texts = tweets(max(args.texts, 2000))
        proc, url = start(run)
        try:
            server = psutil.Process(proc.pid)
            rss_loaded = server.memory_info().rss
            with httpx.Client(base_url=url, timeout=120) as client:
                for _ in range(5):  # warm-up
                    timed(client, texts[: args.texts])
                batch = [timed(client, texts[: args.texts]) for _ in range(args.repeats)]
                single = [timed(client, texts[i : i + 1]) for i in range(args.repeats)]
            loads = [concurrent(url, texts, n, args.clients, args.requests) for n in (1, 20)]
            rss_after = server.memory_info().rss
        finally:
            proc.terminate()
            proc.wait(30)
        from rnnlab.checkpoint import load_run

        loaded = load_run(run)
        for _ in range(3):
            loaded.predict_proba(texts[: args.texts])
        in_process, encode = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            loaded.predict_proba(texts[: args.texts])
            in_process.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            loaded.encode(texts[: args.texts])
            encode.append((time.perf_counter() - t0) * 1e3)
        c = loaded.model.config
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]},
        "run": {"path": str(args.run) if args.run else "default shapes, untrained", "cell": c.cell, "p": c.units,
                "bidirectional": c.bidirectional, "k": c.k, "maxlen": loaded.maxlen, "vocab": len(loaded.vocab)},
        "predict": {"texts": args.texts, "repeats": args.repeats, "median_ms": statistics.median(batch),
                    "p90_ms": percentile(batch, 90), "goal_ms": 100,
                    "in_process_ms": statistics.median(in_process), "tokenize_ms": statistics.median(encode)},
        "predict_one_text": {"median_ms": statistics.median(single), "p90_ms": percentile(single, 90)},
        "concurrent": loads,
        "server_rss_mb": {"loaded": rss_loaded / 2**20, "after_load": rss_after / 2**20},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
