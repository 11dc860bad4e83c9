"""Speed of rnnlab's Elman, GRU and LSTM against PyTorch and Keras 3 (JAX backend), peers in the same run.

    rnnlab bench                                     # every scenario, JSON in ./speed.json
    python -m rnnlab.bench --scenarios S1,S2 --runs 50 --out /tmp/speed.json
    python benchmarks/speed.py ...                   # the same, from a source checkout

Needs the `bench` extra (PyTorch, Keras 3). It prints figures and ratios; the targets they are read
against are stated in benchmarks/README.md.

Scenarios (k features, p units, B sequences, T timesteps):
    S1 tweets     B=64, T=20, k=100, p=64: forward+backward, and a training step (cross-entropy on a linear
                  head over the last state, Adam update)
    S2 streaming  B=1: one step carrying the state (PyTorch's and Keras's RNNCell/GRUCell/LSTMCell; rnnlab's
                  fast.Stream on NumPy, and again as the jitted fast.stepper on JAX arrays), and a T=20
                  forward
    S3 large      B=64, T=50, k=300, p=512: forward, and forward+backward
    S4 long       B=16, T=1000, k=32, p=128: forward+backward (rnnlab rematerialises pieces of 25 steps, about √T),
                  and its peak memory, each framework measured alone in a fresh process

Every time is the median of --runs calls after warm-up, the contenders taking turns in three blocks so that
a change in the machine's load falls on all of them alike; compile time (first call minus the median) is
reported apart.
FLOPs count the matmuls: forward 2·B·T·G·p·(k+p), forward+backward three times that; GFLOP/s is also given
as a fraction of the machine's float32 GEMM rate (2048³). rnnlab's scan is `Recurrent(engine="scan")`.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")  # (before Keras is first imported)

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnlab
from rnnlab import fast
from rnnlab.layers import Recurrent

CELLS = ("elman", "gru", "lstm")
GATES = {"elman": 1, "gru": 3, "lstm": 4}
CLASSES = 3
THREADS = 2
S4_CHUNK = 25
DEFAULT_OUT = "speed.json"  # in the current folder


# ---------------------------------------------------------------------------------------------- timing


def _ready(out):
    return jax.block_until_ready(out) if not _is_torch(out) else out


def _is_torch(out) -> bool:
    return type(out).__module__.startswith("torch")


def measure(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 3, rounds: int = 3) -> dict[str, dict]:
    """Median seconds per call of each function; compile = first call minus the median.

    The contenders take turns in `rounds` blocks of runs/rounds calls each: turns spread a change in the
    machine's load over all of them, and blocks keep one contender's idle threads (OpenMP, Eigen) from
    spinning through the next one's every call.
    """
    first = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t
        for _ in range(warmup - 1):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    block = -(-runs // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # the first call after another contender's block is not timed
            for _ in range(block):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    out = {}
    for name, ts in times.items():
        med = float(np.median(ts))
        out[name] = {"median_s": med, "p10_s": float(np.percentile(ts, 10)), "p90_s": float(np.percentile(ts, 90)),
                     "compile_s": max(first[name] - med, 0.0), "runs": len(ts)}
    return out


def gemm_rate() -> dict:
    """float32 GFLOP/s of a 2048³ matmul (10th-percentile time, so that a busy moment does not lower the
    limit) in PyTorch and in XLA; the larger is the machine's limit."""
    import torch

    n = 2048
    flops = 2 * n**3
    a, b = torch.randn(n, n), torch.randn(n, n)
    ja, jb = jnp.asarray(a.numpy()), jnp.asarray(b.numpy())
    dot = jax.jit(jnp.dot)
    res = measure({"torch": lambda: torch.mm(a, b), "xla": lambda: dot(ja, jb).block_until_ready()}, runs=12)
    rates = {k: flops / v["p10_s"] / 1e9 for k, v in res.items()}  # the machine's rate: its faster calls
    return {"torch_gflops": rates["torch"], "xla_gflops": rates["xla"], "limit_gflops": max(rates.values())}


def flops(cell: str, B: int, T: int, k: int, p: int, backward: bool) -> float:
    fwd = 2.0 * B * T * GATES[cell] * p * (k + p)
    return 3 * fwd if backward else fwd


# ----------------------------------------------------------------------------------------- contenders


def rnnlab_layer(cell: str, k: int, p: int, key, engine: str = "auto") -> Recurrent:
    return Recurrent(rnnlab.make_cell(cell, k, p, key=key), engine=engine)


def rnnlab_fns(cell: str, B: int, T: int, k: int, p: int, x: np.ndarray, y: np.ndarray, scan: bool = False,
               chunk: int | None = None) -> dict[str, Callable]:
    key = jax.random.key(0)
    layer = rnnlab_layer(cell, k, p, key, engine="scan" if scan else "auto")
    head = rnnlab.Readout(p, CLASSES, key=jax.random.key(1))
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def run(layer, x):
        if chunk is not None and not scan:
            state_0 = layer.initial_state(batch=x.shape[0])
            return fast.sequence(layer.cell, x, None, state_0, chunk=chunk)
        return layer(x)

    fwd = jax.jit(lambda layer, x: run(layer, x)[0])

    def fb_loss(layer, x):
        a, _ = run(layer, x)
        return jnp.mean(a * a)

    fb = jax.jit(jax.grad(fb_loss))
    opt = optax.adam(1e-3)
    params, static = eqx.partition((layer, head), eqx.is_array)
    params = jax.tree.map(jnp.copy, params)  # the training step donates its own copy
    state = {"params": params, "opt": opt.init(params)}

    @partial(jax.jit, donate_argnums=(0, 1))
    def train(params, opt_state, x, y):
        def loss(params):
            layer, head = eqx.combine(params, static)
            _, final = layer(x)
            logits = head(layer.cell.hidden(final))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def train_step():
        state["params"], state["opt"], value = train(state["params"], state["opt"], xj, yj)
        return value.block_until_ready()

    return {"fwd": lambda: fwd(layer, xj).block_until_ready(),
            "fwd+bwd": lambda: jax.block_until_ready(fb(layer, xj)),
            "train step": train_step}


def rnnlab_step(cell: str, k: int, p: int, x_t: np.ndarray, jitted: bool = False) -> Callable:
    """One streaming step: `fast.Stream` (NumPy in and out, no JAX dispatch), or with `jitted` the JAX
    function `fast.stepper` on JAX arrays."""
    layer = rnnlab_layer(cell, k, p, jax.random.key(0))
    if not jitted:
        stream = fast.Stream(layer, batch=x_t.shape[0])
        return lambda: stream(x_t)
    step = fast.stepper(layer)
    xj = jnp.asarray(x_t)
    state = {"s": layer.initial_state(batch=x_t.shape[0])}

    def call():
        state["s"] = step(state["s"], xj)
        return jax.block_until_ready(state["s"])

    return call


def torch_fns(cell: str, B: int, T: int, k: int, p: int, x: np.ndarray, y: np.ndarray) -> dict[str, Callable]:
    import torch

    torch.manual_seed(0)
    rnn = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](k, p, batch_first=True)
    head = torch.nn.Linear(p, CLASSES)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)

    def fwd():
        with torch.no_grad():
            return rnn(xt)[0]

    def fb():
        rnn.zero_grad(set_to_none=True)
        a, _ = rnn(xt)
        (a * a).mean().backward()

    def train_step():
        opt.zero_grad(set_to_none=True)
        _, final = rnn(xt)
        h = final[0] if cell == "lstm" else final
        loss = torch.nn.functional.cross_entropy(head(h[-1]), yt)
        loss.backward()
        opt.step()

    return {"fwd": fwd, "fwd+bwd": fb, "train step": train_step}


def torch_step(cell: str, k: int, p: int, x_t: np.ndarray) -> Callable:
    import torch

    torch.manual_seed(0)
    c = {"elman": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[cell](k, p)
    xt = torch.from_numpy(x_t)
    zeros = torch.zeros(x_t.shape[0], p)
    state = {"s": (zeros, zeros.clone()) if cell == "lstm" else zeros}

    def call():
        with torch.no_grad():
            state["s"] = c(xt, state["s"])

    return call


def keras_fns(cell: str, B: int, T: int, k: int, p: int, x: np.ndarray, y: np.ndarray) -> dict[str, Callable]:
    import keras

    keras.utils.set_random_seed(0)
    Layer = {"elman": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[cell]
    seq = keras.Sequential([keras.Input((T, k)), Layer(p, return_sequences=True)])
    clf = keras.Sequential([keras.Input((T, k)), Layer(p), keras.layers.Dense(CLASSES)])
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    seq_tv = [v.value for v in seq.trainable_variables]
    seq_ntv = [v.value for v in seq.non_trainable_variables]

    fwd = jax.jit(lambda tv, x: seq.stateless_call(tv, seq_ntv, x)[0])

    def fb_loss(tv, x):
        a, _ = seq.stateless_call(tv, seq_ntv, x, training=True)
        return jnp.mean(a * a)

    fb = jax.jit(jax.grad(fb_loss))
    opt = keras.optimizers.Adam(1e-3)
    opt.build(clf.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def train(tv, ntv, ov, x, y):
        def loss(tv):
            logits, ntv2 = clf.stateless_call(tv, ntv, x, training=True)
            return loss_fn(y, logits), ntv2

        (value, ntv), grads = jax.value_and_grad(loss, has_aux=True)(tv)
        tv, ov = opt.stateless_apply(ov, grads, tv)
        return tv, ntv, ov, value

    state = {"tv": [v.value for v in clf.trainable_variables],
             "ntv": [v.value for v in clf.non_trainable_variables],
             "ov": [v.value for v in opt.variables]}

    def train_step():
        state["tv"], state["ntv"], state["ov"], value = train(state["tv"], state["ntv"], state["ov"], xj, yj)
        return value.block_until_ready()

    return {"fwd": lambda: fwd(seq_tv, xj).block_until_ready(),
            "fwd+bwd": lambda: jax.block_until_ready(fb(seq_tv, xj)),
            "train step": train_step}


def keras_step(cell: str, k: int, p: int, x_t: np.ndarray) -> Callable:
    import keras

    keras.utils.set_random_seed(0)
    c = {"elman": keras.layers.SimpleRNNCell, "gru": keras.layers.GRUCell, "lstm": keras.layers.LSTMCell}[cell](p)
    c.build((x_t.shape[0], k))
    tv = [v.value for v in c.trainable_variables]
    ntv = [v.value for v in c.non_trainable_variables]
    B = x_t.shape[0]
    states = [jnp.zeros((B, p)) for _ in range(2 if cell == "lstm" else 1)]
    step = jax.jit(lambda tv, x, s: c.stateless_call(tv, ntv, x, s)[0][1], donate_argnums=2)
    xj = jnp.asarray(x_t)
    state = {"s": states}

    def call():
        s = step(tv, xj, state["s"])
        state["s"] = list(s) if isinstance(s, list | tuple) else [s]
        return jax.block_until_ready(state["s"])

    return call


# -------------------------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_probe(framework: str, cell: str, B: int, T: int, k: int, p: int) -> dict:
    """Peak resident memory (MB) that one forward+backward adds, measured in this (fresh) process."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, k), dtype=np.float32)
    y = rng.integers(0, CLASSES, B).astype(np.int32)
    if framework == "torch":
        import torch

        torch.set_num_threads(THREADS)
        fn = torch_fns(cell, B, T, k, p, x, y)["fwd+bwd"]
    elif framework == "keras":
        fn = keras_fns(cell, B, T, k, p, x, y)["fwd+bwd"]
    else:
        fn = rnnlab_fns(cell, B, T, k, p, x, y, chunk=S4_CHUNK if framework == "rnnlab" else None,
                        scan=framework == "rnnlab-scan")["fwd+bwd"]
    for _ in range(3):
        fn()
    gc.collect()
    time.sleep(1.0)  # buffers of the last call are released asynchronously
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kb("VmRSS")
    fn()
    peak_mb = (_status_kb("VmHWM") - before) / 1024
    if framework == "rnnlab":  # its pool of temporaries, made in the warm-up and kept: counted as if new
        peak_mb += fast.engine.scratch_bytes() / 2**20
    return {"peak_mb": peak_mb}


def peak_memory(framework: str, cell: str, B: int, T: int, k: int, p: int) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, "-m", "rnnlab.bench", "--memory-probe", framework, cell, str(B), str(T), str(k), str(p)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]


# ------------------------------------------------------------------------------------------ scenarios


def _data(B: int, T: int, k: int):
    rng = np.random.default_rng(0)
    return rng.standard_normal((B, T, k), dtype=np.float32), rng.integers(0, CLASSES, B).astype(np.int32)


def _rows(scenario: str, cell: str, case: str, res: dict, n_flops: float, limit: float, shape: dict) -> dict:
    row = {"scenario": scenario, "cell": cell, "case": case, **shape, "flops": n_flops,
           "times": res}
    r = res["rnnlab"]["median_s"]
    row["gflops"] = n_flops / r / 1e9
    row["fraction_of_gemm"] = row["gflops"] / limit
    for peer in ("torch", "keras", "rnnlab-scan"):
        if peer in res:
            row[f"speedup_vs_{peer}"] = res[peer]["median_s"] / r
            row[f"p10_speedup_vs_{peer}"] = res[peer]["p10_s"] / res["rnnlab"]["p10_s"]
    return row


def run(scenarios: list[str], cells: list[str], runs: int, log=print) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    gemm = gemm_rate()
    limit = gemm["limit_gflops"]
    log(f"GEMM 2048³: PyTorch {gemm['torch_gflops']:.0f} GFLOP/s, XLA {gemm['xla_gflops']:.0f} GFLOP/s")
    rows = []
    for cell in cells:
        if "S1" in scenarios:
            B, T, k, p = 64, 20, 100, 64
            x, y = _data(B, T, k)
            ours, scan = rnnlab_fns(cell, B, T, k, p, x, y), rnnlab_fns(cell, B, T, k, p, x, y, scan=True)
            theirs, keras_ = torch_fns(cell, B, T, k, p, x, y), keras_fns(cell, B, T, k, p, x, y)
            for case in ("fwd+bwd", "train step"):
                res = measure({"rnnlab": ours[case], "rnnlab-scan": scan[case], "torch": theirs[case],
                               "keras": keras_[case]}, runs)
                rows.append(_rows("S1", cell, case, res, flops(cell, B, T, k, p, True), limit,
                                  dict(B=B, T=T, k=k, p=p)))
                log(_line(rows[-1]))
        if "S2" in scenarios:
            k, p = 100, 64
            x, y = _data(1, 20, k)
            for case, jitted in (("step", False), ("step, jitted", True)):
                res = measure({"rnnlab": rnnlab_step(cell, k, p, x[:, 0], jitted),
                               "torch": torch_step(cell, k, p, x[:, 0]), "keras": keras_step(cell, k, p, x[:, 0])},
                              max(runs, 200))
                rows.append(_rows("S2", cell, case, res, flops(cell, 1, 1, k, p, False), limit,
                                  dict(B=1, T=1, k=k, p=p)))
                log(_line(rows[-1]))
            ours, scan = rnnlab_fns(cell, 1, 20, k, p, x, y), rnnlab_fns(cell, 1, 20, k, p, x, y, scan=True)
            res = measure({"rnnlab": ours["fwd"], "rnnlab-scan": scan["fwd"],
                           "torch": torch_fns(cell, 1, 20, k, p, x, y)["fwd"],
                           "keras": keras_fns(cell, 1, 20, k, p, x, y)["fwd"]}, runs)
            rows.append(_rows("S2", cell, "fwd T=20", res, flops(cell, 1, 20, k, p, False), limit,
                              dict(B=1, T=20, k=k, p=p)))
            log(_line(rows[-1]))
        if "S3" in scenarios:
            B, T, k, p = 64, 50, 300, 512
            x, y = _data(B, T, k)
            ours, theirs = rnnlab_fns(cell, B, T, k, p, x, y), torch_fns(cell, B, T, k, p, x, y)
            keras_ = keras_fns(cell, B, T, k, p, x, y)
            for case, bwd in (("fwd", False), ("fwd+bwd", True)):
                res = measure({"rnnlab": ours[case], "torch": theirs[case], "keras": keras_[case]}, runs, warmup=2)
                rows.append(_rows("S3", cell, case, res, flops(cell, B, T, k, p, bwd), limit,
                                  dict(B=B, T=T, k=k, p=p)))
                log(_line(rows[-1]))
        if "S4" in scenarios:
            B, T, k, p = 16, 1000, 32, 128
            x, y = _data(B, T, k)
            ours = rnnlab_fns(cell, B, T, k, p, x, y, chunk=S4_CHUNK)
            res = measure({"rnnlab": ours["fwd+bwd"], "torch": torch_fns(cell, B, T, k, p, x, y)["fwd+bwd"],
                           "keras": keras_fns(cell, B, T, k, p, x, y)["fwd+bwd"]}, runs, warmup=2)
            row = _rows("S4", cell, "fwd+bwd", res, flops(cell, B, T, k, p, True), limit,
                        dict(B=B, T=T, k=k, p=p, chunk=S4_CHUNK))
            mem = {fw: peak_memory(fw, cell, B, T, k, p) for fw in ("rnnlab", "torch", "keras")}
            row["peak_mb"] = mem
            if mem["rnnlab"] is not None and mem["torch"]:
                row["memory_vs_torch"] = mem["rnnlab"] / mem["torch"]
            rows.append(row)
            log(_line(rows[-1]))
    return {"machine": machine(), "gemm": gemm, "runs": runs, "rows": rows}


def _line(row: dict) -> str:
    """One case as it finishes, in 80 columns: each contender's median in ms."""
    t = row["times"]
    peers = "  ".join(f"{n.replace('rnnlab-', '')} {v['median_s'] * 1e3:.3f}" for n, v in t.items())
    return f"{row['scenario']} {row['cell']:5s} {row['case']:12s} {peers} ms"


def machine() -> dict:
    import keras
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512": "avx512f" in flags, "threads": THREADS,
            "load_average": os.getloadavg(), "python": platform.python_version(), "jax": jax.__version__,
            "torch": torch.__version__, "keras": keras.__version__, "rnnlab_fused": fast.available(),
            "backend": jax.default_backend(), "date": time.strftime("%Y-%m-%d %H:%M %Z")}


# ------------------------------------------------------------------------------------------- output


def table(result: dict):
    """A Rich table of the results in 80 columns: rnnlab's median time and its speed-ups over each peer
    (×torch 2.00: rnnlab in half PyTorch's time), GFLOP/s, the share of the GEMM rate, S4's peak MB."""
    from rich import box
    from rich.table import Table

    m = result["machine"]
    tab = Table(title=f"rnnlab against its peers, {m['threads']} threads; GEMM "
                      f"{result['gemm']['limit_gflops']:.0f} GFLOP/s", title_justify="left", box=box.SIMPLE_HEAD,
                pad_edge=False)
    memory = any("peak_mb" in row for row in result["rows"])
    heads = ["", "cell", "case", "ms", "×torch", "×keras", "×scan", "GFLOP/s", "%GEMM"] + ["MB"] * memory
    for col in heads:
        tab.add_column(col, justify="left" if col in ("", "cell", "case") else "right", no_wrap=True)
    for row in result["rows"]:
        c = _cells(row)
        tab.add_row(*c[:4], *c[7:10], *c[11:13], *[c[14].split(" / ")[0]] * memory)
    return tab


def _ms(row: dict, name: str) -> str:
    t = row["times"].get(name)
    return "" if t is None else f"{t['median_s'] * 1e3:.3f}"


def _cells(row: dict) -> list[str]:
    def ratio(peer, stat="median_s"):
        t = row["times"]
        return "" if peer not in t else f"{t[peer][stat] / t['rnnlab'][stat]:.2f}"

    mem = ""
    if "peak_mb" in row:
        m = row["peak_mb"]
        mem = " / ".join("?" if m[f] is None else f"{m[f]:.0f}" for f in ("rnnlab", "torch", "keras"))
    return [row["scenario"], row["cell"], row["case"], _ms(row, "rnnlab"), _ms(row, "rnnlab-scan"),
            _ms(row, "torch"), _ms(row, "keras"), ratio("torch"), ratio("keras"), ratio("rnnlab-scan"),
            ratio("torch", "p10_s"), f"{row['gflops']:.1f}", f"{100 * row['fraction_of_gemm']:.0f}%",
            f"{row['times']['rnnlab']['compile_s']:.2f}", mem]


def markdown(result: dict) -> str:
    """The table as Markdown, for benchmarks/README.md."""
    head = ["scenario", "cell", "case", "rnnlab ms", "rnnlab scan ms", "PyTorch ms", "Keras ms", "× PyTorch",
            "× Keras", "× scan", "× PyTorch (p10)", "GFLOP/s", "% of GEMM", "compile s",
            "peak MB (rnnlab / PyTorch / Keras)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in result["rows"]]
    return "\n".join(lines)


def missing_peers() -> list[str]:
    """The peers' packages (PyTorch, Keras) that are not installed: the bench extra brings both."""
    return [name for name in ("torch", "keras") if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(prog="python -m rnnlab.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="S1,S2,S3,S4", help="comma-separated (default: %(default)s)")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=30,
                    help="timed calls per contender, at least 30 (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="where the JSON goes (default: ./%(default)s)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    ap.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    ap.add_argument("--render", type=Path, help="print the table of a saved JSON result, and run nothing")
    ap.add_argument("--memory-probe", nargs=6, metavar=("FRAMEWORK", "CELL", "B", "T", "k", "p"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_probe:
        fw, cell, *dims = args.memory_probe
        print(json.dumps(memory_probe(fw, cell, *map(int, dims))))
        return None
    if args.render:
        result = json.loads(args.render.read_text())
    else:
        missing = missing_peers()
        if missing:
            print(f"rnnlab bench: {' and '.join(missing)} not installed; the peers come with the bench extra "
                  '(pip install "rnnlab[bench]")', file=sys.stderr)
            raise SystemExit(2)
        result = run(args.scenarios.split(","), args.cells.split(","), max(args.runs, 30),
                     log=(lambda s: print(s, file=sys.stderr)) if args.json else print)
        write_json(args.out, result)
    show(result, as_json=args.json, as_markdown=args.markdown, out=None if args.render else args.out)
    return result



def write_json(path: Path, result: dict) -> None:
    """The result to `path`, written to a temporary name beside it and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def show(result: dict, *, as_json: bool = False, as_markdown: bool = False, out: Path | None = None) -> None:
    """The table (or the JSON) on stdout, and where the JSON was written."""
    if as_json:
        print(json.dumps(result, indent=1))
        return
    from rich.console import Console

    console = Console()
    console.print(table(result))
    if out is not None:
        console.print(f"JSON: {out}")
    if as_markdown:
        print(markdown(result))


if __name__ == "__main__":
    main()
