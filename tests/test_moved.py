"""The module paths that moved into subpackages still import, with a DeprecationWarning naming the new home,
and give the old public names; the project itself imports none of them."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import rnnlab
from rnnlab import _moved

ROOT = Path(__file__).resolve().parents[1]

# old path -> names it had (its __all__ then, and what the project used from it)
OLD_NAMES = {
    "rnnlab.explain": ["BYTES_PER_FLOAT", "Explanation", "Parameter", "build", "cell_flops", "explain",
                       "same_weights_any_T", "state_per_step", "unrolled_svg", "unrolled_text", "renderables"],
    "rnnlab.inspect": ["Inspection", "inspect_layer", "inspect_run", "inspect_sequence", "render", "terminal"],
    "rnnlab.experiments": ["PAPER", "DEFAULTS", "Evaluation", "SequenceRun", "cluster_words", "evaluate",
                           "mean_hidden_by_word", "report", "train_sequence", "tree_text", "save_sequence",
                           "load_sequence", "is_sequence_run"],
    "rnnlab.data.elman": ["ElmanData", "NOUNS", "VERBS", "load", "matches_template", "next_word_distribution"],
    "rnnlab.tune_task": ["TrainTask", "count", "cross_validation", "token_lengths", "trained"],
    "rnnlab.tune_report": ["table", "summary", "write_csv", "plot"],
}


def fresh_import(old: str, monkeypatch):
    """Import `old` as a first import would (the test process may hold it already), undone after the test."""
    parent, _, leaf = old.rpartition(".")
    monkeypatch.delitem(sys.modules, old, raising=False)
    monkeypatch.setattr(sys.modules[parent], leaf, getattr(sys.modules[parent], leaf, None), raising=False)
    return importlib.import_module(old)


def test_every_moved_path_is_tested():
    assert set(OLD_NAMES) == set(_moved.MOVED)


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_old_path_imports_warns_and_has_its_old_names(old, monkeypatch):
    homes = _moved.MOVED[old]
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {homes[0]}") as caught:
        module = fresh_import(old, monkeypatch)
    assert Path(caught[0].filename).resolve() == Path(__file__).resolve()  # points at the importing line
    new = [importlib.import_module(h) for h in homes]
    for name in OLD_NAMES[old]:
        owner = next(m for m in new if name in vars(m))  # the name lives in one of the new modules
        assert getattr(module, name) is vars(owner)[name], name
    assert set(module.__all__) >= {n for m in new for n in getattr(m, "__all__", ())}
    with pytest.raises(AttributeError, match=rf"moved to {homes[0]}.*no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


def test_an_old_path_is_not_a_file():
    for old in _moved.MOVED:
        path = ROOT / "src" / (old.replace(".", "/") + ".py")
        assert not path.exists(), path


def test_a_patch_through_the_old_path_reaches_the_new_module(monkeypatch):
    from rnnlab.teach import states_views

    with pytest.warns(DeprecationWarning):
        old = fresh_import("rnnlab.inspect", monkeypatch)
    marker = object()
    monkeypatch.setattr(old, "render", marker)
    assert states_views.render is marker and old.render is marker


def test_rnnlab_explain_stays_the_function_after_importing_the_old_module_path(monkeypatch):
    from rnnlab.teach.explain import build
    from rnnlab.teach.explain import explain as explain_fn

    model = build("gru", features=5, units=3, outputs=2)
    with pytest.warns(DeprecationWarning, match="rnnlab.explain moved to rnnlab.teach.explain"):
        fresh_import("rnnlab.explain", monkeypatch)
    assert isinstance(rnnlab.explain, _moved.Facade)  # the import put the module path in the function's place
    ex = rnnlab.explain(model, timesteps=7, batch=2)
    want = explain_fn(model, timesteps=7, batch=2)
    assert (ex.total, ex.T, ex.B, ex.flops) == (want.total, 7, 2, want.flops)
    assert ex.total == sum(int(np.size(x)) for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    from rnnlab import explain as imported

    assert imported(model).total == want.total and rnnlab.explain.explain is explain_fn


def test_a_facade_that_is_no_function_is_not_callable(monkeypatch):
    with pytest.warns(DeprecationWarning):
        old = fresh_import("rnnlab.tune_report", monkeypatch)
    with pytest.raises(TypeError, match="not callable"):
        old()


def _old_imports(path: Path, root: Path = ROOT) -> list[str]:
    """The moved paths that `path` imports (import statements and importlib.import_module("...") calls)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                     if f"{node.module}.{a.name}" != "rnnlab.explain"]  # the function
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names = [node.args[0].value]
        found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names if n in _moved.MOVED]
    return found


def test_the_project_imports_no_moved_path():
    files = [f for d in ("src", "tests", "benchmarks") for f in (ROOT / d).rglob("*.py")
             if f.resolve() != Path(__file__).resolve()]
    assert len(files) > 50
    assert [hit for f in files for hit in _old_imports(f)] == []


def test_the_checker_finds_an_old_import(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("from rnnlab import experiments\nimport importlib\nimportlib.import_module('rnnlab.inspect')\n"
                   "from rnnlab import explain\nfrom rnnlab.data import elman\n")
    hits = _old_imports(bad, tmp_path)
    assert sorted(h.split(": ")[1] for h in hits) == ["rnnlab.data.elman", "rnnlab.experiments", "rnnlab.inspect"]


def test_an_old_path_imports_from_python_c_and_from_a_script(tmp_path):
    import subprocess

    script = tmp_path / "old.py"
    script.write_text("import rnnlab.experiments\nprint(rnnlab.experiments.train_sequence.__module__)\n")
    for args in (["-c", "import rnnlab.inspect; print(rnnlab.inspect.render.__module__)"], [str(script)]):
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]   # the warning at __main__'s line, not an ImportError
        assert done.stdout.strip() in ("rnnlab.teach.states_views", "rnnlab.teach.elman.experiments")
        where = "<string>:1" if args[0] == "-c" else f"{script}:1"
        assert f"{where}: DeprecationWarning: rnnlab." in done.stderr, done.stderr[-2000:]


def test_importing_the_package_and_its_commands_warns_nothing():
    import subprocess

    code = "import rnnlab, rnnlab.cli, rnnlab.serve, rnnlab.tune, rnnlab.tune.task, rnnlab.teach.elman"
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
