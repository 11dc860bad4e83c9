"""Imports flow one way (docs/architecture.md): no cycle among rnnlab's modules, imports inside functions
included, and the low rows never import the rows above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_graph(src: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports, read from the source (every import statement, at the top
    or inside a function). `from a import b` counts as importing a.b where that is a module, else a."""
    files = {}
    for f in (src / package).rglob("*.py"):
        parts = f.relative_to(src).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f

    def owner(name: str) -> str | None:  # the module `name` lives in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, f in files.items():
        here = name if f.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                root = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in files else root for a in node.names]
            else:
                continue
            deps |= {m for m in map(owner, targets) if m is not None and m != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_check_finds_a_cycle_made_by_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg.sub import high\n    return high\n")
    (pkg / "sub" / "__init__.py").write_text("from . import high\n")
    (pkg / "sub" / "high.py").write_text("from ..low import f\n")
    (pkg / "alone.py").write_text("import pkg.low\n")
    graph = module_graph(tmp_path, "pkg")
    assert graph["pkg.sub.high"] == {"pkg.low"} and graph["pkg.alone"] == {"pkg.low"}
    assert graph["pkg.low"] == {"pkg.sub.high"} and cycles(graph) == [["pkg.low", "pkg.sub.high"]]


def test_rnnlab_has_no_import_cycle():
    graph = module_graph(SRC, "rnnlab")
    assert {"rnnlab.layers", "rnnlab.fast.layer", "rnnlab.padding"} <= set(graph)
    assert cycles(graph) == []


@pytest.mark.parametrize(("module", "never"), [
    ("rnnlab.padding", ("rnnlab.",)),  # nothing of rnnlab's at all
    ("rnnlab.cells", ("rnnlab.layers", "rnnlab.fast", "rnnlab.models", "rnnlab.train", "rnnlab.cli")),
    ("rnnlab.fast", ("rnnlab.layers", "rnnlab.models", "rnnlab.train", "rnnlab.cli")),
    ("rnnlab.layers", ("rnnlab.models", "rnnlab.train", "rnnlab.cli", "rnnlab.bench", "rnnlab.teach", "rnnlab.tune")),
    ("rnnlab.models", ("rnnlab.train", "rnnlab.cli", "rnnlab.teach", "rnnlab.tune")),
    ("rnnlab.train", ("rnnlab.cli", "rnnlab.serve", "rnnlab.teach", "rnnlab.tune")),
    ("rnnlab.teach", ("rnnlab.cli", "rnnlab.serve", "rnnlab.tune")),
    ("rnnlab.tune", ("rnnlab.cli", "rnnlab.serve", "rnnlab.teach")),
])
def test_a_low_row_imports_nothing_above_it(module, never):
    graph = module_graph(SRC, "rnnlab")
    for name, deps in graph.items():
        if name == module or name.startswith(module + "."):
            above = sorted(d for d in deps if d.startswith(never))
            assert above == [], f"{name} imports {above}"


def test_only_the_command_line_imports_the_command_line():
    graph = module_graph(SRC, "rnnlab")
    users = sorted(n for n, deps in graph.items() if not n.startswith("rnnlab.cli")
                   and any(d.startswith("rnnlab.cli") for d in deps))
    assert users == []


def test_a_view_imports_its_computing_module_never_the_reverse():
    """In teach/ and tune/ what is drawn (explain_views, states_views, elman.views, tune.report) reads what is
    computed; no computing module imports a drawing one, lazily included."""
    graph = module_graph(SRC, "rnnlab")
    views = {"rnnlab.teach.explain_views", "rnnlab.teach.states_views", "rnnlab.teach.elman.views",
             "rnnlab.tune.report"}
    assert views <= set(graph)
    assert "rnnlab.teach.explain" in graph["rnnlab.teach.explain_views"]
    assert "rnnlab.teach.states" in graph["rnnlab.teach.states_views"]
    assert "rnnlab.teach.elman.experiments" in graph["rnnlab.teach.elman.views"]
    computing = [n for n in graph if n.startswith(("rnnlab.teach.", "rnnlab.tune.")) and n not in views
                 and not (SRC / n.replace(".", "/")).is_dir()]  # a package's __init__ re-exports both
    assert computing and all(not (graph[n] & views) for n in computing), {n: graph[n] & views for n in computing}
