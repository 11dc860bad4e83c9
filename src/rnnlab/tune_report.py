"""A sweep's results for a person: a Rich table, a CSV of every trial, and the plot of validation score
against the number of units p (log scale) with the parameter count on a second axis."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from rnnlab.tune import Space, best

STATE_STYLE = {"complete": "green", "pruned": "yellow", "fail": "red"}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def table(rows: Sequence[dict[str, Any]], space: Space, metric: str, title: str | None = None) -> Table:
    """One line per trial, sorted by the swept values; the best validation score in bold."""
    top = best(rows)
    out = Table(title=title, title_justify="left", header_style="bold")
    out.add_column("#", justify="right", style="dim")
    for name in space.names:
        out.add_column(name, justify="right" if name != "cell" else "left")
    out.add_column("parameters", justify="right")
    recurrent = any(isinstance(r.get("rnn_params"), int) for r in rows)
    if recurrent:
        out.add_column("recurrent", justify="right")
    out.add_column(f"val {metric}", justify="right")
    out.add_column("epochs", justify="right")
    out.add_column("time", justify="right")
    out.add_column("state")
    for r in sorted(rows, key=lambda r: (*tuple(_key(r.get(n)) for n in space.names), r["trial"])):
        score = _fmt(r["score"])
        if top is not None and r["trial"] == top["trial"]:
            score = f"[bold]{score} ★[/bold]"
        params = [f"{r[c]:,}" if isinstance(r.get(c), int) else "—"
                  for c in ("params", "rnn_params")[: 1 + recurrent]]
        seconds = f"{r['seconds']:.1f} s" if r["seconds"] is not None else "—"
        state = r["state"] if not r.get("error") else f"fail: {r['error'][:60]}"
        out.add_row(str(r["trial"]), *(_fmt(r.get(n)) for n in space.names), *params, score,
                    _fmt(r["epochs"]), seconds, f"[{STATE_STYLE.get(r['state'], '')}]{state}[/]")
    return out


def _key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def write_csv(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, test: dict[str, Any] | None = None
) -> Path:
    """Every trial (and the test row, `role` test, when there is one) as CSV, written atomically."""
    path = Path(path)
    records = [*rows, *([test] if test else [])]
    columns: list[str] = []
    for r in records:
        columns += [c for c in r if c not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in records:
            writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    os.replace(tmp, path)
    return path


def plot(
    rows: Sequence[dict[str, Any]], space: Space, metric: str, paths: Sequence[str | os.PathLike],
    title: str | None = None, note: str | None = None,
) -> list[Path]:
    """Validation score against units (log₂ axis), one line per combination of the other swept values
    (the best score at each p when ranges are searched), pruned trials hollow, the best one starred;
    the parameter count of each line on the right axis (log scale). Saved to each path (.png, .svg, .pdf)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = [n for n in space.varied if n != "units" and n in space.choices]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=130)
    ax2 = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = best(rows)
    labels = sorted({tuple(r.get(g) for g in groups) for r in rows}, key=lambda t: tuple(map(_key, t)))
    for i, label in enumerate(labels):
        color = colors[i % len(colors)]
        mine = [r for r in rows if tuple(r.get(g) for g in groups) == label]
        name = ", ".join(f"{g}={v}" for g, v in zip(groups, label, strict=True)) or "validation"
        done: dict[int, float] = {}
        for r in mine:
            if r["state"] == "complete" and r["score"] is not None:
                done[r["units"]] = max(done.get(r["units"], -math.inf), r["score"])
        xs = sorted(done)
        ax.plot(xs, [done[x] for x in xs], "o-", color=color, label=name, zorder=3)
        pruned = [r for r in mine if r["state"] == "pruned" and r["score"] is not None]
        if pruned:
            ax.scatter([r["units"] for r in pruned], [r["score"] for r in pruned], facecolors="none",
                       edgecolors=color, zorder=3, label=f"{name} (pruned)")
        for column, style, what in (("params", "s--", "all parameters"), ("rnn_params", "^:", "recurrent")):
            counts = {r["units"]: r[column] for r in mine if isinstance(r.get(column), int)}
            if counts:
                ps = sorted(counts)
                ax2.plot(ps, [counts[p] for p in ps], style, color=color if groups else "0.4", alpha=0.5,
                         markersize=4,
                         label=f"{name}: {what}" if groups else what)
    if top is not None:
        ax.scatter([top["units"]], [top["score"]], marker="*", s=260, color="gold", edgecolors="black",
                   zorder=4, label=f"best: p={top['units']} ({top['score']:.3f})")
    ax.set_xscale("log", base=2)
    units = sorted({r["units"] for r in rows if r.get("units") is not None})
    if units:
        ax.set_xticks(units, [str(u) for u in units])
        ax.set_xlim(units[0] / 1.4, units[-1] * 1.4)
    ax.minorticks_off()
    ax.set_xlabel("units p (log scale)")
    ax.set_ylabel(f"validation {metric}")
    ax2.set_yscale("log")
    ax2.set_ylabel("parameters (log scale)", color="0.4")
    ax2.tick_params(axis="y", colors="0.4")
    ax.grid(True, alpha=0.3)
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    handles = ax.get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="lower right", fontsize=7,
              framealpha=0.85)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    written = []
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p)
        written.append(p)
    plt.close(fig)
    return written
