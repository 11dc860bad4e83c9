"""`rnnlab bench`: speed against PyTorch and Keras 3 on this machine (`rnnlab.bench`)."""

from __future__ import annotations

from pathlib import Path

import typer

from rnnlab.cli.app import app

EPILOG = """\
[bold]Examples[/bold]

  [dim]# every scenario (S1 tweets, S2 streaming, S3 large, S4 long), all three cells: several minutes[/dim]
  rnnlab bench

  [dim]# the tweet-sized training step and streaming only, GRU and LSTM, 50 timed calls each[/dim]
  rnnlab bench --scenarios S1,S2 --cells gru,lstm --runs 50 --out /tmp/speed.json

  [dim]# the fused CPU path off for "auto": rnnlab on its lax.scan alone[/dim]
  RNNLAB_FAST=0 rnnlab bench --scenarios S1
"""


@app.command(epilog=EPILOG)
def bench(
    scenarios: str = typer.Option("S1,S2,S3,S4", help="Comma-separated: S1 (B=64, T=20, k=100, p=64), S2 "
                                  "(streaming, B=1), S3 (B=64, T=50, k=300, p=512), S4 (B=16, T=1000, "
                                  "k=32, p=128, with peak memory)."),
    cells: str = typer.Option("elman,gru,lstm", help="Comma-separated cells: elman, gru, lstm."),
    runs: int = typer.Option(30, min=30, help="Timed calls per contender; the median is reported."),
    out: Path = typer.Option(Path("speed.json"), help="Where the JSON results go (a file; the default is in "
                             "the current folder)."),
    markdown: bool = typer.Option(False, help="Also print the table as Markdown (for benchmarks/README.md)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON results instead of the table (progress "
                                 "lines go to stderr)."),
) -> None:
    """Time rnnlab's Elman, GRU and LSTM against PyTorch and Keras 3 (JAX backend) in one process.

    Medians of --runs calls after warm-up, contenders taking turns; compile time apart; each case also
    as GFLOP/s and as a fraction of the machine's 2048³ float32 GEMM rate, and as ratios to each peer
    (×torch 2.00: rnnlab takes half PyTorch's time). Needs the bench extra: pip install "rnnlab[bench]".
    """
    from rnnlab import bench as speed

    argv = ["--scenarios", scenarios, "--cells", cells, "--runs", str(runs), "--out", str(out)]
    speed.main(argv + ["--markdown"] * markdown + ["--json"] * as_json)
