"""Speed and memory of MinGRU and MinLSTM beside rnnlab's GRU and LSTM and PyTorch's, in one run.

    python benchmarks/mincells.py                        # S4 and T = 10 000; JSON in benchmarks/results/
    python benchmarks/mincells.py --scenarios S4 --runs 12 --markdown

Scenarios (forward+backward: the gradient of mean(a²) over the layer's weights, as `rnnlab bench`'s S4):
    S4        B=16, T=1000,   k=32, p=128
    S4-10k    B=16, T=10000,  k=32, p=128

Contenders: rnnlab's GRU and LSTM as `rnnlab bench` runs them at S4 (the fused engine, rematerialised in
pieces of 25 steps), PyTorch's nn.GRU and nn.LSTM (at S4; at T = 10 000 with --torch-long), and the min
cells on the scan path by both of their scans: "sequential" (lax.scan) and "associative"
(jax.lax.associative_scan), each in pieces of `layers.MIN_PIECE` steps under jax.checkpoint (the default
for min cells). Times are medians of --runs
calls, the contenders taking turns (`rnnlab.bench.measure`); peak memory is what one forward+backward adds
to the resident set, each contender alone in a fresh process.

Goals: each min cell at least 5x rnnlab's GRU at S4 and 10x at T = 10 000, and a peak memory
no larger than the GRU's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab import bench
from rnnlab.cells import MinGRU, MinLSTM
from rnnlab.layers import Recurrent

HERE = Path(__file__).resolve().parent
SCENARIOS = {"S4": dict(B=16, T=1000, k=32, p=128), "S4-10k": dict(B=16, T=10_000, k=32, p=128)}
TORCH_IN = ("S4",)  # PyTorch's layers where --torch-long is not given: at T = 10 000 a call takes seconds
GOAL_VS_GRU = {"S4": 5.0, "S4-10k": 10.0}
MIN_CELLS = {"mingru": MinGRU, "minlstm": MinLSTM}
CONTENDERS = ("rnnlab gru", "rnnlab lstm", "torch gru", "torch lstm", "mingru sequential", "mingru associative",
              "minlstm sequential", "minlstm associative")


def min_fwd_bwd(cell: str, scan: str, B: int, T: int, k: int, p: int, x: np.ndarray):
    layer = Recurrent(MIN_CELLS[cell](k, p, scan=scan, key=jax.random.key(0)))
    grad = jax.jit(jax.grad(lambda layer, x: jnp.mean(layer(x)[0] ** 2)))
    xj = jnp.asarray(x)
    return lambda: jax.block_until_ready(grad(layer, xj))


def contender(name: str, B: int, T: int, k: int, p: int, x: np.ndarray, y: np.ndarray):
    """The forward+backward of one contender, as a function of no arguments."""
    framework, cell = name.split(" ")
    if framework == "rnnlab":
        return bench.rnnlab_fns(cell, B, T, k, p, x, y, chunk=bench.S4_CHUNK)["fwd+bwd"]
    if framework == "torch":
        return bench.torch_fns(cell, B, T, k, p, x, y)["fwd+bwd"]
    return min_fwd_bwd(framework, cell, B, T, k, p, x)


def memory_probe(name: str, B: int, T: int, k: int, p: int) -> dict:
    """Peak resident memory (MB) one forward+backward adds, in this (fresh) process; as `bench.memory_probe`."""
    if name.startswith("torch"):
        import torch

        torch.set_num_threads(bench.THREADS)
    x, y = bench._data(B, T, k)
    fn = contender(name, B, T, k, p, x, y)
    for _ in range(3):
        fn()
    gc.collect()
    time.sleep(1.0)  # buffers of the last call are released asynchronously
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) reset to the current RSS
    before = bench._status_kb("VmRSS")
    fn()
    peak_mb = (bench._status_kb("VmHWM") - before) / 1024
    if name.startswith("rnnlab"):  # the engine's pool of temporaries, kept from the warm-up: counted as new
        peak_mb += bench.fast.engine.scratch_bytes() / 2**20
    return {"peak_mb": peak_mb}


def peak_memory(name: str, B: int, T: int, k: int, p: int) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--memory-probe", name, str(B), str(T), str(k), str(p)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]


def run(scenarios: list[str], runs: int, memory: bool = True, torch_long: bool = False,
        contenders: tuple[str, ...] = CONTENDERS, log=print) -> dict:
    import torch

    torch.set_num_threads(bench.THREADS)
    rows = []
    for scenario in scenarios:
        dims = SCENARIOS[scenario]
        B, T, k, p = dims["B"], dims["T"], dims["k"], dims["p"]
        x, y = bench._data(B, T, k)
        names = [n for n in CONTENDERS if (n in contenders or n == "rnnlab gru")
                 and (torch_long or scenario in TORCH_IN or not n.startswith("torch"))]
        fns = {name: contender(name, B, T, k, p, x, y) for name in names}
        times = bench.measure(fns, runs, warmup=2)
        mem = {name: peak_memory(name, B, T, k, p) for name in names} if memory else {}
        gru = times["rnnlab gru"]["median_s"]
        for name in names:
            row = {"scenario": scenario, **dims, "contender": name, **times[name],
                   "vs_rnnlab_gru": gru / times[name]["median_s"], "peak_mb": mem.get(name)}
            if name.startswith("min"):
                row["goal_vs_gru"] = GOAL_VS_GRU[scenario]
                fast_enough = row["vs_rnnlab_gru"] >= GOAL_VS_GRU[scenario]
                small_enough = None if not memory or None in (mem[name], mem["rnnlab gru"]) \
                    else mem[name] <= mem["rnnlab gru"]
                row["goal_met"] = fast_enough and small_enough is not False
            rows.append(row)
            log(_line(row))
    return {"machine": bench.machine(), "runs": runs, "rows": rows}


def _line(row: dict) -> str:
    mem = "" if row.get("peak_mb") is None else f"  {row['peak_mb']:.0f} MB"
    return (f"{row['scenario']:7s} {row['contender']:20s} {row['median_s'] * 1e3:10.2f} ms"
            f"  {row['vs_rnnlab_gru']:6.2f}x GRU{mem}")


def markdown(result: dict) -> str:
    head = ["scenario", "contender", "median ms", "p10 ms", "× rnnlab GRU", "peak MB", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        goal = ""
        if "goal_met" in r:
            goal = ("met" if r["goal_met"] else "MISSED") + f": ≥{r['goal_vs_gru']:.0f}× GRU, memory ≤ GRU's"
        mem = "" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
        lines.append(f"| {r['scenario']} | {r['contender']} | {r['median_s'] * 1e3:.2f} | {r['p10_s'] * 1e3:.2f} | "
                     f"{r['vs_rnnlab_gru']:.2f} | {mem} | {goal} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="S4,S4-10k", help="comma-separated: S4, S4-10k (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=12, help="timed calls per contender (default: %(default)s)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes (default: probe)")
    ap.add_argument("--torch-long", action="store_true",
                    help="PyTorch's layers at T = 10 000 too (default: at S4 only)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "mincells.json",
                    help="where the JSON goes (default: %(default)s)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS),
                    help="comma-separated, rnnlab's GRU always among them (default: all)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown (default: off)")
    ap.add_argument("--memory-probe", nargs=5, metavar=("NAME", "B", "T", "k", "p"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_probe:
        name, *dims = args.memory_probe
        print(json.dumps(memory_probe(name, *map(int, dims))))
        return None
    scenarios = args.scenarios.split(",")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown[0]!r}: use {', '.join(SCENARIOS)}")
    contenders = tuple(c.strip() for c in args.contenders.split(","))
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        ap.error(f"unknown contender {unknown[0]!r}: use {', '.join(CONTENDERS)}")
    result = run(scenarios, args.runs, memory=not args.no_memory, torch_long=args.torch_long, contenders=contenders)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print(f"JSON: {args.out}")
    if args.markdown:
        print(markdown(result))
    return result


if __name__ == "__main__":
    main()
