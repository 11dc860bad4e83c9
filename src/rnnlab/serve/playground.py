"""POST /explain: what `rnnlab explain --json` gives for a model built from sizes, and the rest of what
`rnnlab explain` prints (the unrolled loop, growth with T and p, the misreadings answered by running
the layer), all from `rnnlab.teach.explain` (drawn by `rnnlab.teach.explain_views`).

    explanation({"cell": "elman", "k": 50, "p": 10, "T": 20})                        # all of it
    explanation({"cell": "elman", "k": 50, "p": 10, "T": 20, "misreadings": False})  # without running

Counts, FLOPs and memory depend on the arrays' shapes alone, so they are read off a model of zeros
made from `build`'s shapes (no random weights drawn: a slider's move is answered at once); the
misreadings run the layer `build` makes, with its weights.
"""

from __future__ import annotations

from functools import lru_cache

from rnnlab.cells import CELLS, MinCell
from rnnlab.serve import limits
from rnnlab.serve.limits import RequestError

FIELDS = ("cell", "k", "p", "T", "B", "q", "layers", "every_step", "misreadings")
STEPS_RUN = 2000  # the misreadings run at most this many steps, as `rnnlab explain` does
STEPS_LISTED = 8  # rows of the step table returned: the first ones and the last


def cell_names() -> list[str]:
    """The cells `explain` can build, once each (aliases such as "rnn" left out)."""
    names = {}
    for name, cls in CELLS.items():
        names.setdefault(cls, name)
    return list(names.values())


def parse(body: dict) -> tuple:
    """(cell, k, p, T, B, q, layers, every_step, misreadings) from a request body, checked against the
    limits."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; /explain reads {', '.join(FIELDS)}")
    cell = body.get("cell", "elman")
    names = cell_names()
    if not isinstance(cell, str) or cell.lower() not in CELLS:
        raise RequestError(422, f'"cell" must be one of {", ".join(names)}; got {cell!r}')
    cell = cell.lower()
    k, p, T = limits.size(body, "k"), limits.size(body, "p"), limits.size(body, "T")
    B, q, layers = limits.size(body, "B", 1), limits.size(body, "q", 2), limits.size(body, "layers", 1)
    every_step, misreadings = body.get("every_step", False), body.get("misreadings", True)
    for name, value in (("every_step", every_step), ("misreadings", misreadings)):
        if not isinstance(value, bool):
            raise RequestError(422, f'"{name}" must be true or false; got {value!r}')
    count = _count(cell, k, p, q, layers)
    if count > limits.MAX_PARAMETERS:
        raise RequestError(422, f"{cell} with k={k}, p={p}, {layers} layer(s) would hold {count:,} parameters; "
                                f"at most {limits.MAX_PARAMETERS:,} are built here")
    return cell, k, p, T, B, q, layers, every_step, misreadings


def _count(cell: str, k: int, p: int, q: int, layers: int) -> int:
    """About the parameters of `build`'s model (no GRU c_n): what the limit is checked against."""
    G = len(CELLS[cell].gate_names)
    U = 0 if issubclass(CELLS[cell], MinCell) else p  # the min cells have no U_a (p × p per gate)
    return G * p * (k + U + 1) + (layers - 1) * G * p * (p + U + 1) + q * (p + 1)


def explanation(body: dict) -> dict:
    cell, k, p, T, B, q, layers, every_step, misreadings = parse(body)
    out = dict(_explanation(cell, k, p, T, B, q, layers, every_step))
    if misreadings:
        out["misreadings"] = _misreadings(cell, k, p, T, q, layers, every_step)
    return out


@lru_cache(maxsize=4)
def _model(cell: str, k: int, p: int, q: int, layers: int, every_step: bool):
    """The model `rnnlab explain` builds for these sizes, with its weights."""
    from rnnlab.teach.explain import build

    return build(cell, features=k, units=p, outputs=q, layers=layers, every_step=every_step)


@lru_cache(maxsize=4)
def _zeros(cell: str, k: int, p: int, q: int, layers: int, every_step: bool):
    """The same model's structure with zeros for its arrays: `build` traced for shapes only (no random
    weights drawn, nothing compiled)."""
    import equinox as eqx
    import jax
    import numpy as np

    from rnnlab.teach.explain import build

    shapes = eqx.filter_eval_shape(build, cell, features=k, units=p, outputs=q, layers=layers,
                                   every_step=every_step, key=jax.random.key(0))
    return jax.tree_util.tree_map(  # device_put: a jax.Array without compiling a program per shape
        lambda s: jax.device_put(np.zeros(s.shape, s.dtype)) if isinstance(s, jax.ShapeDtypeStruct) else s, shapes)


@lru_cache(maxsize=32)
def _same_weights(cell: str, k: int, p: int, q: int, layers: int, every_step: bool) -> dict:
    from rnnlab.teach.explain import same_weights_any_T

    s = same_weights_any_T(_model(cell, k, p, q, layers, every_step), 20, 2000)
    return {"T_short": s.T_short, "T_long": s.T_long, "parameters": s.parameters,
            "parameters_short": s.parameters_short, "parameters_long": s.parameters_long,
            "a_short_shape": list(s.a_short_shape), "a_long_shape": list(s.a_long_shape),
            "max_difference": s.max_difference}


@lru_cache(maxsize=256)
def _explanation(cell: str, k: int, p: int, T: int, B: int, q: int, layers: int, every_step: bool) -> dict:
    from rnnlab.teach.explain import explain
    from rnnlab.teach.explain_views import unrolled_svg, unrolled_text

    ex = explain(_zeros(cell, k, p, q, layers, every_step), timesteps=T, batch=B)
    out = ex.to_dict()
    out["roles"] = {prm.name: prm.role for prm in ex.params}
    out["svg"] = unrolled_svg(ex)
    out["unrolled"] = unrolled_text(ex)
    out["at_T"] = [_costs(ex.at(t)) for t in sorted({1, 20, T, 2000})]
    doubled = _count(cell, k, 2 * p, q, layers) <= limits.MAX_PARAMETERS
    out["p_doubled"] = _costs(explain(_zeros(cell, k, 2 * p, q, layers, every_step), timesteps=T, batch=B)) if (
        doubled) else None
    return out


@lru_cache(maxsize=64)
def _misreadings(cell: str, k: int, p: int, T: int, q: int, layers: int, every_step: bool) -> dict:
    """The two misreadings answered by running the layer: the loop's steps, and the same weights on
    T=20 and T=2000 (what `rnnlab explain` prints under its tables)."""
    from rnnlab.teach.explain import state_per_step

    rows = state_per_step(_model(cell, k, p, q, layers, every_step), min(T, STEPS_RUN))
    listed = rows if len(rows) <= STEPS_LISTED else [*rows[: STEPS_LISTED - 1], rows[-1]]
    return {
        "steps_run": len(rows),
        "all_units_changed": all(r.changed == r.units for r in rows),
        "steps": [{"t": r.t, "x": list(r.x_shape), "a_prev": list(r.a_prev_shape), "a": list(r.a_shape),
                   "changed": r.changed, "units": r.units} for r in listed],
        "same_weights": _same_weights(cell, k, p, q, layers, every_step),
    }


def _costs(ex) -> dict:
    return {"T": ex.T, "p": ex.p, "total": ex.total, "flops_sequence": ex.flops["sequence"],
            "memory_sequence": ex.memory["sequence"]}
