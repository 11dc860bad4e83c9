"""`explain` reads the model's own arrays: its counts equal the arrays' sizes and never depend on T."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import equinox as eqx
import jax
import numpy as np
import pytest
from typer.testing import CliRunner

import rnnlab
from rnnlab.cli import app
from rnnlab.teach import explain as ex
from rnnlab.teach import explain_views as views

CELLS = ["elman", "gru", "lstm"]


def array_entries(model) -> int:
    """The number of floats in the model, counted straight from its leaves."""
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))


def formula(cell: str, k: int, p: int) -> int:
    """Parameters of one layer from the equations: G blocks of W (p×k), U (p×p), b (p), and GRU's c_n."""
    G = {"elman": 1, "gru": 3, "lstm": 4}[cell]
    return G * p * (k + p + 1) + (p if cell == "gru" else 0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("k", "p", "q"), [(50, 10, 2), (3, 30, 0), (1, 1, 1)])
def test_parameter_count_equals_the_arrays_and_the_equations(cell, k, p, q):
    model = ex.build(cell, features=k, units=p, outputs=q)
    result = ex.explain(model, timesteps=20)
    assert result.total == array_entries(model)
    assert result.total == formula(cell, k, p) + (q * (p + 1) if q else 0)
    assert {prm.name.rsplit(".", 1)[-1] for prm in result.params} >= {"W_a", "U_a", "b_a"}


@pytest.mark.parametrize("cell", CELLS)
def test_parameters_identical_for_T_20_and_T_2000(cell):
    model = ex.build(cell, features=50, units=10, outputs=3)
    short, long = ex.explain(model, timesteps=20), ex.explain(model, timesteps=2000)
    assert short.params == long.params and short.total == long.total
    assert short.memory["parameters"] == long.memory["parameters"]
    # the work and the activations are what T multiplies
    assert short.flops["step"] == long.flops["step"] and short.memory["step"] == long.memory["step"]
    readout = 2 * 3 * 10 + 3
    assert short.flops["sequence"] == (short.flops["step"]) * 20 + readout
    assert long.flops["sequence"] == (long.flops["step"]) * 2000 + readout
    assert long.memory["sequence"] - 3 * 4 == 100 * (short.memory["sequence"] - 3 * 4)


@pytest.mark.parametrize("cell", CELLS)
def test_explain_counts_every_kind_of_model(cell):
    key = jax.random.key(1)
    stack = rnnlab.RNN(cell, features=7, units=5, layers=2, bidirectional=True, key=key)
    result = ex.explain(stack)
    assert result.total == array_entries(stack) == 2 * formula(cell, 7, 5) + 2 * formula(cell, 10, 5)
    assert len(result.cells) == 4
    bare = rnnlab.make_cell(cell, 4, 6, key=key)
    assert ex.explain(bare).total == formula(cell, 4, 6)


def test_flops_of_one_elman_step_by_hand():
    # k=3, p=2: W_a x is 2×3 multiply-adds (12 FLOPs), U_a a is 2×2 (8), + b_a, + U_a a, tanh: 2 each
    cell = rnnlab.Elman(features=3, units=2, key=jax.random.key(0))
    assert ex.cell_flops(cell) == 12 + 8 + 6
    result = ex.explain(cell, timesteps=10, batch=4)
    assert result.flops == {"step": 26, "sequence": 260, "batch": 1040}
    # kept for backprop per step: z_t (2 floats) and a_t (2 floats), float32
    assert result.memory["step"] == 16 and result.memory["batch"] == 16 * 10 * 4


def test_sequence_model_readout_runs_every_step():
    from rnnlab.models import sequence_model

    model = sequence_model("elman", 29, 16, 29, key=jax.random.key(0))
    result = ex.explain(model, timesteps=10)
    assert result.every_step
    assert result.flops["sequence"] == 10 * (ex.cell_flops(model.layer.cell) + 2 * 29 * 16 + 29)
    once = ex.explain(sequence_model("elman", 29, 16, 29, every_step=False, key=jax.random.key(0)), timesteps=10)
    assert not once.every_step and once.flops["sequence"] == 10 * ex.cell_flops(model.layer.cell) + 2 * 29 * 16 + 29


def test_build_gives_the_one_sequence_model_and_the_old_names_still_work():
    from rnnlab.models import SequenceModel
    from rnnlab.teach.elman import experiments

    model = ex.build("gru", features=5, units=4, outputs=3, layers=2, every_step=True)
    assert type(model) is SequenceModel and model.every_step and model.q == 3 and len(model.rnn.layers) == 2
    with pytest.warns(DeprecationWarning, match="rnnlab.models.SequenceModel"):
        assert ex.Network is SequenceModel
    with pytest.warns(DeprecationWarning, match="sequence_model"):
        old = experiments.SequenceModel("elman", 6, 5, 6, "sigmoid", key=jax.random.key(0))
    assert type(old) is SequenceModel and old.output == "sigmoid" and old.units == 5


@pytest.mark.parametrize(("p", "T"), [(10, 20), (30, 20)])
def test_every_unit_updates_at_every_step(p, T):
    """The seed's misreadings: 20 words into 10 units is not two pieces of 10; 30 units with 20 words
    is not 20 units used. Each of the T steps reads one x_t and writes all p units."""
    model = ex.build("elman", features=50, units=p)
    rows = ex.state_per_step(model, T)
    assert len(rows) == T
    for r in rows:
        assert r.x_shape == (50,) and r.a_prev_shape == (p,) and r.a_shape == (p,)
        assert r.changed == p


def test_state_per_step_equals_the_scan():
    layer = rnnlab.Recurrent(rnnlab.GRU(features=4, units=3, key=jax.random.key(2)))
    xs = jax.random.normal(jax.random.key(0), (6, 4))  # what state_per_step draws with seed 0
    a, _ = layer(xs)
    state = layer.initial_state()
    for t in range(6):
        state = layer.step(state, xs[t])
        np.testing.assert_allclose(np.asarray(state), np.asarray(a[t]), atol=1e-6)
    assert len(ex.state_per_step(layer, 6)) == 6


@pytest.mark.parametrize("cell", CELLS)
def test_same_weights_run_20_and_2000_steps(cell):
    model = ex.build(cell, features=8, units=5)
    same = ex.same_weights_any_T(model, 20, 2000)
    assert same.a_short_shape == (20, 5) and same.a_long_shape == (2000, 5)
    assert same.parameters_short == same.parameters_long == formula(cell, 8, 5)
    assert same.max_difference < 1e-6


@pytest.mark.parametrize("T", [1, 3, 20])
def test_unrolled_drawings(T):
    result = ex.explain(ex.build("lstm", features=50, units=10, outputs=2), timesteps=T)
    text = views.unrolled_text(result)
    assert "x_1 (50)" in text and f"a_{T} (10)" in text and f"y_{T} (2)" in text
    drawing, footer = text.rsplit("\n", 1)
    assert drawing.count("[ cell ]") == min(T, 4) and "the same cell" in footer
    svg = views.unrolled_svg(result)
    root = ET.fromstring(svg)  # well-formed
    assert root.tag.endswith("svg")
    assert svg.count("<rect x=") == min(T, 4) and f"x_{T} (50)" in svg


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="units"):
        ex.build("elman", features=5, units=0)
    with pytest.raises(ValueError, match="timesteps"):
        ex.explain(ex.build("elman", features=5, units=2), timesteps=0)
    with pytest.raises(ValueError, match="no recurrent cell"):
        ex.explain(rnnlab.Readout(3, 2, key=jax.random.key(0)))


runner = CliRunner()


def test_cli_explain_prints_the_tables_and_the_answers():
    result = runner.invoke(app, ["explain", "--cell", "gru", "-k", "50", "-p", "10", "-T", "20"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "W_a" in out and "U_a" in out and "30×50" in out
    assert "2 pieces of 10 words" in out and "10 of 10" in out


def test_cli_explain_json_and_svg(tmp_path):
    svg = tmp_path / "loop.svg"
    result = runner.invoke(
        app, ["explain", "--cell", "lstm", "-k", "4", "-p", "3", "-q", "0", "--json", "--svg", str(svg)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total"] == formula("lstm", 4, 3)
    assert sum(p["count"] for p in data["parameters"]) == data["total"]
    ET.parse(svg)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--units", "0"], "--units must be at least 1"),
        (["--timesteps", "-3"], "--timesteps must be at least 1"),
        (["--features", "0"], "--features must be at least 1"),
        (["--cell", "transformer"], "unknown --cell"),
        (["--outputs", "-1"], "--outputs"),
        (["no/such/run"], "no such run folder"),
    ],
)
def test_cli_explain_wrong_arguments_get_clear_messages(args, message):
    result = runner.invoke(app, ["explain", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_explain_a_saved_run(tmp_path):
    from rnnlab.checkpoint import load_run, save_run
    from rnnlab.data import Vocabulary
    from rnnlab.models import ModelConfig, TextClassifier

    vocab = Vocabulary(["<pad>", "<unk>", "good", "bad", "day"])
    config = ModelConfig(vocab_size=len(vocab), classes=2, k=4, cell="lstm", units=3, bidirectional=True)
    save_run(
        tmp_path,
        TextClassifier(config, key=jax.random.key(0)),
        {"maxlen": 16},
        vocab,
        ("neg", "pos"),
        "sentiment",
        "macro_f1",
    )
    result = runner.invoke(app, ["explain", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    model = load_run(tmp_path).model
    assert data["total"] == array_entries(model) == 5 * 4 + 2 * formula("lstm", 4, 3) + 2 * (6 + 1)
    assert data["T"] == 16 and not data["every_step"]


def test_cli_explain_refuses_a_model_too_large_to_build():
    result = runner.invoke(app, ["explain", "--units", "100000", "--features", "5"])
    assert result.exit_code == 2
    assert "10,000,600,000 parameters" in result.output.replace("\n", " ")


# -- 80 columns, and what a bidirectional or stacked model adds -------------------------------------------


def rendered(obj, width: int = 80) -> list[str]:
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None)
    console.print(obj)
    return console.export_text().splitlines()


def test_the_unrolled_loop_fits_80_columns_and_says_what_it_left_out():
    from rich.console import Console

    explained = ex.explain(ex.build("lstm", features=100, units=64, outputs=2), timesteps=2000)
    lines = rendered(explained, 80)
    assert max(len(line) for line in lines) <= 80
    drawing = next(i for i, line in enumerate(lines) if "the loop, unrolled" in line)
    loop = next(line for line in lines[drawing:] if "a_0 (" in line)
    assert "···" in loop and "a_2000 (64)" in loop           # the whole chain on one line, the gap marked
    wide = Console(width=200, record=True, color_system=None)
    wide.print(explained)
    assert max(line.count("[ cell ]") for line in wide.export_text().splitlines()) == 4  # room: 4 steps drawn


def test_array_names_are_folded_never_cut():
    model = ex.build("gru", features=50, units=8, outputs=2, bidirectional=True, layers=2)
    lines = rendered(ex.explain(model), 80)
    assert "…" not in "".join(lines)
    first_column = "".join(line.split("│")[1].strip() for line in lines if line.count("│") == 5)
    for p in ex.parameters(model):
        assert p.name in first_column                    # its folded pieces follow one another


def test_a_bidirectional_model_names_its_backward_direction():
    bidirectional = ex.explain(ex.build("gru", features=5, units=8, outputs=2, bidirectional=True))
    said = " ".join(bidirectional.equations)
    assert "the backward direction" in said and "a_t (16,) = [forward a_t; backward a_t]" in said
    assert "layer below" not in said
    stacked = ex.explain(ex.build("lstm", features=5, units=4, layers=3))
    assert "2 more layer(s)" in " ".join(stacked.equations) and "backward" not in " ".join(stacked.equations)
    assert "[forward a_t; backward a_t]" in "\n".join(rendered(bidirectional, 120))  # as written, not markup


@pytest.mark.parametrize(("args", "words"), [
    (["--svg", "{tmp}"], "is a folder: give the file to write"),
    (["--svg", "/proc/no/such/loop.svg"], "cannot write it"),
    (["--json", "true"], "switches take no value"),
])
def test_cli_explain_bad_paths_are_one_line(tmp_path, args, words):
    result = runner.invoke(app, ["explain", *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
