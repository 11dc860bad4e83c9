"""A sweep's results for a person: a Rich table, a CSV of every trial, and the plot of validation score
against the number of units p (log scale) with the parameter count on a second axis."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from rnnlab.tune.study import REPEAT, Space, best, groups

STATE_STYLE = {"complete": "green", "pruned": "yellow", "fail": "red"}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def table(rows: Sequence[dict[str, Any]], space: Space, metric: str, title: str | None = None,
          width: int | None = None) -> Table:
    """One line per trial, sorted by the swept values; the best configuration's scores in bold, starred.
    Every column is as wide as its widest value or header word, never cut: where they do not fit `width`, the
    columns recurrent, epochs, time, parameters are left out in that order, and the caption says so (as it
    writes out each failed trial's error)."""
    top = best(rows, space)
    top_key = None if top is None else tuple(top.get(n) for n in space.config_names)
    recurrent = any(isinstance(r.get("rnn_params"), int) for r in rows)
    columns = ["#", *space.names, "parameters", *(["recurrent"] if recurrent else []), f"val {metric}", "epochs",
               "time", "state"]
    cells, errors = [], []
    for r in sorted(rows, key=lambda r: (*tuple(_key(r.get(n)) for n in space.names), r["trial"])):
        score = _fmt(r["score"])
        if r["state"] == "complete" and tuple(r.get(n) for n in space.config_names) == top_key:
            score = f"{score} ★"
        params = [f"{r[c]:,}" if isinstance(r.get(c), int) else "—"
                  for c in ("params", "rnn_params")[: 1 + recurrent]]
        seconds = f"{r['seconds']:.1f} s" if r["seconds"] is not None else "—"
        if r.get("error"):
            errors.append(f"trial {r['trial']} failed: {r['error']}")
        cells.append([str(r["trial"]), *(_fmt(r.get(n)) for n in space.names), *params, score, _fmt(r["epochs"]),
                      seconds, r["state"]])
    widths = [max([len(c[i]) for c in cells] + [len(w) for w in name.split()]) for i, name in enumerate(columns)]
    keep = list(range(len(columns)))
    left_out = []
    for optional in ("recurrent", "epochs", "time", "parameters"):
        if width is None or sum(widths[i] + 3 for i in keep) + 1 <= width:
            break
        if optional in columns:
            keep.remove(columns.index(optional))
            left_out.append(optional)
    caption = errors + ([f"left out at {width} columns: {', '.join(left_out)} (trials.csv holds every column)"]
                        if left_out else [])
    out = Table(title=title, title_justify="left", header_style="bold", caption="\n".join(caption) or None,
                caption_justify="left")
    for i in keep:
        out.add_column(columns[i], justify="left" if columns[i] in ("cell", "state") else "right",
                       min_width=widths[i], style="dim" if columns[i] == "#" else None)
    score_at = columns.index(f"val {metric}")
    for c, r in zip(cells, sorted(rows, key=lambda r: (*tuple(_key(r.get(n)) for n in space.names), r["trial"])),
                    strict=True):
        styled = [*c]
        if c[score_at].endswith("★"):
            styled[score_at] = f"[bold]{c[score_at]}[/bold]"
        styled[-1] = f"[{STATE_STYLE.get(r['state'], '')}]{c[-1]}[/]"
        out.add_row(*(styled[i] for i in keep))
    return out


def summary(rows: Sequence[dict[str, Any]], space: Space, metric: str, title: str | None = None) -> Table:
    """One line per configuration over its seeds: runs, mean, spread (min..max) of the validation score."""
    top = best(list(rows), space)
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in space.config_names:
        out.add_column(name, justify="right" if name != "cell" else "left")
    out.add_column("seeds", justify="right")
    out.add_column(f"mean val {metric}", justify="right")
    out.add_column("min", justify="right")
    out.add_column("max", justify="right")
    for key, rs in sorted(groups(list(rows), space).items(), key=lambda kv: tuple(map(_key, kv[0]))):
        scores = [r["score"] for r in rs]
        mean = _fmt(sum(scores) / len(scores))
        if top is not None and key == tuple(top.get(n) for n in space.config_names):
            mean = f"[bold]{mean} ★[/bold]"
        out.add_row(*map(_fmt, key), str(len(rs)), mean, _fmt(min(scores)), _fmt(max(scores)))
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
    with _atomic(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in records:
            writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return path


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary name beside `path`, this process's own (workers may share a folder), renamed onto `path`
    once written; removed if the write fails."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plot(
    rows: Sequence[dict[str, Any]], space: Space, metric: str, paths: Sequence[str | os.PathLike],
    title: str | None = None, note: str | None = None,
) -> list[Path]:
    """Validation score against units (log₂ axis), one line per combination of the other swept values
    (the best configuration at each p when ranges are searched); with several seeds, the line is their mean,
    each seed a dot and the bar their range; pruned trials hollow, the best configuration starred; the
    parameter count of each line on the right axis (log scale). Saved to each path (.png, .svg, .pdf)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lines = [n for n in space.varied if n not in ("units", REPEAT) and n in space.choices]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=130)
    ax2 = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = best(list(rows), space)
    labels = sorted({tuple(r.get(g) for g in lines) for r in rows}, key=lambda t: tuple(map(_key, t)))
    for i, label in enumerate(labels):
        color = colors[i % len(colors)]
        mine = [r for r in rows if tuple(r.get(g) for g in lines) == label]
        name = ", ".join(f"{g}={v}" for g, v in zip(lines, label, strict=True)) or "validation"
        done: dict[int, list[float]] = {}                 # p -> the scores of the best configuration at p
        for rs in groups(mine, space).values():
            scores = [r["score"] for r in rs]
            p = rs[0]["units"]
            if p not in done or sum(scores) / len(scores) > sum(done[p]) / len(done[p]):
                done[p] = scores
        xs = sorted(done)
        means = [sum(done[x]) / len(done[x]) for x in xs]
        repeated = any(len(done[x]) > 1 for x in xs)
        runs = max((len(done[x]) for x in xs), default=1)
        ax.plot(xs, means, "o-", color=color, zorder=3,
                label=f"{name}, mean of {runs} seeds (bars: min–max)" if repeated else name)
        if repeated:
            ax.errorbar(xs, means, yerr=[[m - min(done[x]) for x, m in zip(xs, means, strict=True)],
                                         [max(done[x]) - m for x, m in zip(xs, means, strict=True)]],
                        fmt="none", ecolor=color, alpha=0.6, capsize=3, zorder=2)
            ax.scatter([x for x in xs for _ in done[x]], [s for x in xs for s in done[x]], s=10,
                       color=color, alpha=0.45, zorder=2)
        pruned = [r for r in mine if r["state"] == "pruned" and r["score"] is not None]
        if pruned:
            ax.scatter([r["units"] for r in pruned], [r["score"] for r in pruned], facecolors="none",
                       edgecolors=color, zorder=3, label=f"{name} (pruned)")
        for column, style, what in (("params", "s--", "all parameters"), ("rnn_params", "^:", "recurrent")):
            counts = {r["units"]: r[column] for r in mine if isinstance(r.get(column), int)}
            if counts:
                ps = sorted(counts)
                ax2.plot(ps, [counts[p] for p in ps], style, color=color if lines else "0.4", alpha=0.5,
                         markersize=4, label=f"{name}: {what}" if lines else what)
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
    # below the axes, where it hides no point
    ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="upper center", fontsize=7,
              bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    if note:
        ax.annotate(note, (0, 0), xycoords="figure fraction", xytext=(6, 4), textcoords="offset points",
                    fontsize=7, color="0.35")
    written = []
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        with _atomic(p) as tmp:
            fig.savefig(tmp, format=p.suffix.lstrip(".") or None, bbox_inches="tight", pad_inches=0.15)
        written.append(p)
    plt.close(fig)
    return written
