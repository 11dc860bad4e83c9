"""How an `Explanation` is drawn: the loop unrolled (text and SVG) and the Rich tables of `rnnlab explain`.

    unrolled_text(ex)     one box per step, every box the same cell (fits a terminal)
    unrolled_svg(ex)      the same picture as an SVG document (the playground's)
    renderables(ex)       the equations, the parameters, the costs, what grows with T and p, the loop as it
                          runs: Rich renderables in reading order

What is drawn is computed in `explain`; this module reads it and never the reverse (`explain.Explanation`
is printed through the drawing that this module installs when imported, as `rnnlab` does at once).
"""

from __future__ import annotations

import html

import jax

from rnnlab.cells import Cell, MinCell
from rnnlab.layers import Bidirectional, Recurrent
from rnnlab.models import SequenceModel, sequence_model
from rnnlab.teach import explain as _explain
from rnnlab.teach.explain import Explanation, _m, build, explain, same_weights_any_T, state_per_step

__all__ = ["renderables", "unrolled_svg", "unrolled_text"]



def _steps_drawn(T: int, most: int = 5) -> list[int | None]:
    """Which steps to draw: all of them up to `most`, else the first few, a gap (None), and the last."""
    if most >= T:
        return list(range(1, T + 1))
    return [*range(1, most - 1), None, T]


def unrolled_text(ex: Explanation, most: int = 5) -> str:
    """The loop unrolled over T steps as text: one box per step, every box the same cell."""
    cell = ex.cells[0]
    k, p = cell.features, cell.units
    q = ex.readouts[0].W_y.shape[0] if ex.readouts else None
    mid, centers = f"a_0 ({p}) ─▶", []
    for i, t in enumerate(_steps_drawn(ex.T, most)):
        if t is None:
            mid += " ··· ─▶"
            continue
        box = "[ cell ]"
        centers.append((len(mid) + 1 + len(box) // 2, t))
        mid += " " + box
        last = i == len(_steps_drawn(ex.T, most)) - 1
        mid += f" ─ a_{t} ({p})" + ("" if last else " ─▶")
    rows = [[" "] * (len(mid) + 12) for _ in range(7)]

    def put(row: int, center: int, text: str) -> None:
        start = max(0, center - len(text) // 2)
        for j, ch in enumerate(text):
            rows[row][start + j] = ch

    for c, t in centers:
        put(0, c, f"x_{t} ({k})")
        put(1, c, "│")
        put(2, c, "▼")
        if q is not None and (ex.every_step or t == ex.T):
            put(4, c, "│")
            put(5, c, "▼")
            put(6, c, f"y_{t} ({q})")
    lines = ["".join(r).rstrip() for r in rows[:3]] + [mid] + ["".join(r).rstrip() for r in rows[4:]]
    lines = [ln for ln in lines if ln] if q is None else lines
    shared = ", ".join(f"{n} [{_m(getattr(cell, n))}]" for n in ("W_a", "U_a", "b_a") if getattr(cell, n) is not None)
    lines.append(
        f"every [ cell ] is the same cell with the same {shared}: "
        f"T={ex.T} step{'s' if ex.T > 1 else ''}, p={p} units each"
    )
    return "\n".join(lines)


def _steps_that_fit(ex: Explanation, width: int | None, most: int = 5) -> int:
    """The most steps (3 to `most`) whose drawing fits `width` columns inside a panel's border."""
    for n in range(most, 3, -1):
        drawing = unrolled_text(ex, n).splitlines()[:-1]          # the last line is prose: it may wrap
        if width is None or max(map(len, drawing)) <= width - 4:
            return n
    return 3


def unrolled_svg(ex: Explanation, most: int = 5) -> str:
    """The unrolled loop as an SVG document (the same picture as `unrolled_text`)."""
    cell = ex.cells[0]
    k, p = cell.features, cell.units
    q = ex.readouts[0].W_y.shape[0] if ex.readouts else None
    steps = _steps_drawn(ex.T, most)
    bw, bh, gap, x0, y0 = 90, 50, 80, 110, 70
    width = max(760, x0 + len(steps) * (bw + gap) + 60)
    height = 260
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="{y0 + bh / 2 + 4}">a_0 ({p})</text>',
    ]
    cy = y0 + bh / 2
    prev_x = 75
    for i, t in enumerate(steps):
        bx = x0 + i * (bw + gap)
        cx = bx + bw / 2
        if t is None:
            out.append(f'<text x="{cx - 10}" y="{cy + 5}" font-size="20">···</text>')
            out.append(f'<line x1="{prev_x}" y1="{cy}" x2="{bx + 5}" y2="{cy}" stroke="#333" stroke-dasharray="4 3"/>')
            prev_x = bx + bw - 5
            continue
        out.append(f'<line x1="{prev_x}" y1="{cy}" x2="{bx}" y2="{cy}" stroke="#333" marker-end="url(#arrow)"/>')
        if i > 0 and steps[i - 1] is not None:
            out.append(f'<text x="{prev_x + 8}" y="{cy - 8}" fill="#1f4e9c">a_{t - 1} ({p})</text>')
        out.append(f'<rect x="{bx}" y="{y0}" width="{bw}" height="{bh}" rx="6" fill="#e8f0fb" stroke="#1f4e9c"/>')
        out.append(f'<text x="{cx}" y="{cy + 5}" text-anchor="middle">cell</text>')
        out.append(f'<text x="{cx}" y="{y0 - 45}" text-anchor="middle">x_{t} ({k})</text>')
        out.append(f'<line x1="{cx}" y1="{y0 - 38}" x2="{cx}" y2="{y0}" stroke="#333" marker-end="url(#arrow)"/>')
        if q is not None and (ex.every_step or t == ex.T):
            out.append(
                f'<line x1="{cx}" y1="{y0 + bh}" x2="{cx}" y2="{y0 + bh + 40}" stroke="#333" marker-end="url(#arrow)"/>'
            )
            out.append(f'<text x="{cx}" y="{y0 + bh + 58}" text-anchor="middle">y_{t} ({q})</text>')
        prev_x = bx + bw
    T = ex.T
    out.append(f'<line x1="{prev_x}" y1="{cy}" x2="{prev_x + 40}" y2="{cy}" stroke="#333" marker-end="url(#arrow)"/>')
    out.append(f'<text x="{prev_x + 4}" y="{cy - 8}" fill="#1f4e9c">a_{T} ({p})</text>')
    shared = ", ".join(f"{n} [{_m(getattr(cell, n))}]" for n in ("W_a", "U_a", "b_a") if getattr(cell, n) is not None)
    out.append(
        f'<text x="10" y="{height - 20}">{e(f"Every box is the same cell, the same {shared}: ")}'
        f"{e(f'T={T} timesteps, p={p} units at each.')}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- rendering


def _human(n: float | int, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= 0.9995 * scale:  # 999.6 M reads "1 G", not "1e+03 M"
            return f"{n / scale:.3g} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _bytes(n: float | int) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.3g} {suffix}"
    return f"{n:.0f} B"


def renderables(ex: Explanation, *, misreadings: bool = True, drawing: bool = True, max_rows: int = 20,
                width: int | None = None):
    """The explanation as Rich renderables, in reading order; the drawing fits `width` columns (the fewer
    steps drawn, the narrower: the steps left out stand as ···)."""
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    cell = ex.cells[0]
    k, p, T, B = cell.features, cell.units, ex.T, ex.B
    kinds = ", ".join(sorted({c.kind for c in ex.cells}))
    yield Rule(f"[bold]{kinds}: k={k} features, p={p} units, T={T} timesteps, B={B} sequence{'s' if B > 1 else ''}")
    yield Panel(Text("\n".join(ex.equations)), title="the equations, shapes filled in", expand=False)  # no markup

    table = Table(title="parameters: the model's arrays", title_justify="left")
    table.add_column("array", overflow="fold")  # folded, never cut: the name says which array it is
    table.add_column("shape", justify="right")
    table.add_column("count", justify="right")
    table.add_column("what it is")
    for prm in ex.params:
        table.add_row(prm.name, "×".join(map(str, prm.shape)), f"{prm.count:,}", prm.role)
    table.add_section()
    alike = ", ".join(f"T={t}" for t in sorted({1, 20, T, 2000}))
    table.add_row("[bold]total", "", f"[bold]{ex.total:,}", f"for {alike} alike: no shape mentions T")
    yield table

    costs = Table(title="cost: forward FLOPs and activation memory (float32)", title_justify="left")
    costs.add_column("")
    costs.add_column("per step", justify="right")
    costs.add_column(f"per sequence (× T={T})", justify="right")
    costs.add_column(f"per batch (× B={B})", justify="right")
    costs.add_row("FLOPs", _human(ex.flops["step"]), _human(ex.flops["sequence"]), _human(ex.flops["batch"]))
    costs.add_row(
        "activations kept for backprop",
        _bytes(ex.memory["step"]),
        _bytes(ex.memory["sequence"]),
        _bytes(ex.memory["batch"]),
    )
    costs.add_row(
        "parameters",
        _bytes(ex.memory["parameters"]),
        _bytes(ex.memory["parameters"]),
        _bytes(ex.memory["parameters"]),
    )
    yield costs

    grow = Table(title="what grows with T and what grows with p", title_justify="left")
    for col in ("T", "p", "parameters", "FLOPs / sequence", "activations / sequence"):
        grow.add_column(col, justify="right")
    for t_ in sorted({20, T, 2000}):
        e2 = ex.at(t_)
        grow.add_row(str(t_), str(p), f"{e2.total:,}", _human(e2.flops["sequence"]), _bytes(e2.memory["sequence"]))
    if isinstance(ex.model, SequenceModel | Cell | Recurrent):
        doubled = explain(_resized(ex, 2 * p), timesteps=T, every_step=ex.every_step)
        grow.add_row(
            str(T),
            str(2 * p),
            f"{doubled.total:,}",
            _human(doubled.flops["sequence"]),
            _bytes(doubled.memory["sequence"]),
        )
    yield grow
    doubling = ("Doubling p doubles W_a (G·p×k) and b_a: a min cell has no U_a, so no p×p term"
                if isinstance(cell, MinCell) else "Doubling p doubles W_a (p×k) and quadruples U_a (p×p)")
    yield Text(
        f"T multiplies the work and the activations, never the parameters. {doubling}, whatever T is.",
        style="italic",
    )
    yield _in_order_table(ex)

    if drawing:
        yield Panel(unrolled_text(ex, most=_steps_that_fit(ex, width)), title="the loop, unrolled", expand=False)
    if misreadings:
        yield from _misreadings(ex, max_rows)


def _in_order_table(ex: Explanation):
    """The time a sequence needs: what waits for a_{t-1}, and how many steps must run one after another."""
    from rich.table import Table

    t = ex.time
    table = Table(title=f"what must wait for a_{{t-1}}, per sequence of T={ex.T}", title_justify="left")
    table.add_column("")
    table.add_column("this model", justify="right")
    table.add_column("what it means")
    table.add_row("FLOPs in products with a_{t-1}", _human(t["recurrent_flops"]),
                  "U_a a_{t-1} at every step" if t["recurrent_flops"] else "none: the gates read x_t alone")
    table.add_row("other FLOPs", _human(ex.flops["sequence"] - t["recurrent_flops"]),
                  "W_a x_t + b_a (all T steps in one matmul), elementwise")
    table.add_row("steps in order, as a loop", f"{t['sequential_steps']:,}", "T")
    levels = t["scan_levels"]
    table.add_row("levels of a parallel scan", "—" if levels is None else f"{levels:,}",
                  "a_t depends on a_{t-1} through U_a and a nonlinearity: T in order" if levels is None
                  else "⌈log₂ T⌉: the steps (α_t, β_t) compose associatively")
    return table


def _resized(ex: Explanation, units: int):
    """The same architecture with p = `units` (for the growth table)."""
    model = ex.model
    cell = ex.cells[0]
    if isinstance(model, SequenceModel):
        return sequence_model(cell.kind, cell.features, units, model.q, model.output, layers=len(model.rnn.layers),
                              bidirectional=isinstance(model.rnn.layers[0], Bidirectional),
                              every_step=model.every_step, key=jax.random.key(0))
    return build(cell.kind, features=cell.features, units=units).rnn


def _misreadings(ex: Explanation, max_rows: int):
    from rich.table import Table
    from rich.text import Text

    cell = ex.cells[0]
    k, p, T = cell.features, cell.units, ex.T
    shown = min(T, 2000)
    rows = state_per_step(ex.model, shown)
    run_for = f"{T} steps" if shown == T else f"the first {shown} of {T} steps"
    table = Table(title=f"the loop as it runs: {run_for}, each one updating all p={p} units", title_justify="left")
    for col in ("t", "reads x_t", "and a_{t-1}", "writes a_t", "units changed"):
        table.add_column(col, justify="right")
    pick = rows if len(rows) <= max_rows else [*rows[: max_rows - 2], None, *rows[-1:]]
    for r in pick:
        if r is None:
            table.add_row("…", "", "", "", "")
            continue
        table.add_row(str(r.t), str(r.x_shape), str(r.a_prev_shape), str(r.a_shape), f"{r.changed} of {r.units}")
    yield table
    every = all(r.changed == r.units for r in rows)
    if p < T:
        wrong = f"T={T} words into p={p} units is not {-(-T // p)} pieces of {p} words"
    elif p > T:
        wrong = f'p={p} units with T={T} words is not "{T} units used, then the next sequence"'
    else:
        wrong = f"p={p} units for T={T} words is not one unit per word"
    lines = [
        f"• {wrong}: there are {T} steps, each reads one whole x_t ({k} features) into the same {p} units"
        + (", and all of them changed at every step." if every else "."),
        f"• the state a_t has shape ({p},) at every one of the {T} steps: p is the size of the state, T the "
        f"number of times the loop runs; the two are independent.",
    ]
    same = same_weights_any_T(ex.model, 20, 2000)
    lines.append(
        f"• the same weights run T={same.T_short} and T={same.T_long}: the layer has "
        f"{same.parameters_short:,} parameters for both, states {same.a_short_shape} and "
        f"{same.a_long_shape}, "
        f"and the first {same.T_short} states of the long run equal the short run's "
        f"(largest difference {same.max_difference:.1e})."
    )
    yield Text("\n".join(lines))


def _draw(ex: Explanation, width: int | None):
    return renderables(ex, width=width)


_explain.drawing = _draw  # how `rich.print(explain(model))` draws: this module's tables
