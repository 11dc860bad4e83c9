"""`inspect`'s matrix is the layer's states: p rows × T columns, one column per real token, no padding."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import rnnlab
from rnnlab.cli import app
from rnnlab.teach import states as ins
from rnnlab.teach import states_views as views

runner = CliRunner()


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_matrix_equals_the_layers_scan(cell):
    """inspect runs the loop one `step` at a time; the scan runs it in one `lax.scan`: same states."""
    layer = rnnlab.Recurrent(rnnlab.make_cell(cell, 5, 7, key=jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (9, 5))
    result = ins.inspect_layer(layer, x, [f"w{t}" for t in range(9)])
    a, _ = layer(x)
    assert result.a.shape == (7, 9)  # p rows, T columns
    np.testing.assert_allclose(result.a, np.asarray(a).T, atol=1e-5)


def test_padding_has_no_column():
    """The same sequence inside a padded batch gives the same T columns; the padding's are not drawn."""
    stack = rnnlab.RNN("gru", features=4, units=3, bidirectional=True, key=jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (6, 4))
    result = ins.inspect_layer(stack, x)
    assert result.a.shape == (6, 6) and result.directions == (3, 3)
    padded = jnp.zeros((2, 11, 4)).at[0, :6].set(x).at[1].set(1.0)
    a, _ = stack(padded, jnp.array([6, 11]))
    np.testing.assert_allclose(result.a, np.asarray(a[0, :6]).T, atol=1e-5)
    assert np.all(np.asarray(a[0, 6:]) == 0)  # what the batch holds at the padding: nothing


def test_readout_gives_y_after_each_step(tmp_path):
    layer = rnnlab.Recurrent(rnnlab.Elman(features=2, units=4, key=jax.random.key(0)))
    readout = rnnlab.Readout(4, 3, key=jax.random.key(1))
    x = jnp.ones((5, 2))
    result = ins.inspect_layer(layer, x, list("abcde"), readout=readout, outputs=("neg", "neu", "pos"))
    assert result.y.shape == (5, 3)
    np.testing.assert_allclose(result.y.sum(1), 1.0, rtol=1e-5)
    expected = jax.nn.softmax(readout(layer(x)[0]), axis=-1)
    np.testing.assert_allclose(result.y, np.asarray(expected), atol=1e-5)
    assert result.predictions() == [("neg", "neu", "pos")[i] for i in np.argmax(expected, axis=1)]
    png, svg = views.render(result, tmp_path / "heat")
    assert png.stat().st_size > 1000
    text = svg.read_text()
    assert "<svg" in text and "4 units (rows)" in text and "5 timesteps" in text


def test_wrong_inputs_are_refused():
    layer = rnnlab.Recurrent(rnnlab.Elman(features=2, units=4, key=jax.random.key(0)))
    with pytest.raises((ValueError, TypeError)):  # TypeError from the shape annotations under pytest
        ins.inspect_layer(layer, jnp.ones((2, 5, 2)))
    with pytest.raises(ValueError, match="3 token labels for T=5"):
        ins.inspect_layer(layer, jnp.ones((5, 2)), ["a", "b", "c"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small classifier saved the way `rnnlab train` saves one (untrained: the shapes are what matter)."""
    from rnnlab.checkpoint import save_run
    from rnnlab.data import Vocabulary
    from rnnlab.models import ModelConfig, TextClassifier

    vocab = Vocabulary(["<pad>", "<unk>", "i", "love", "this", "so", "sad", "today"])
    config = ModelConfig(vocab_size=len(vocab), classes=3, k=6, cell="gru", units=5, bidirectional=True)
    model = TextClassifier(config, key=jax.random.key(0))
    path = tmp_path_factory.mktemp("run")
    save_run(path, model, {"maxlen": 12}, vocab, ("anger", "joy", "sadness"), "emotion", "macro_f1")
    return path


def test_inspect_run_matches_the_padded_batch(run_dir):
    from rnnlab.checkpoint import load_run

    run = load_run(run_dir)
    result = ins.inspect_run(run, "I love this so much today")
    tokens = result.tokens
    assert result.a.shape == (10, len(tokens))  # 2p rows (two directions), one column per token
    assert result.directions == (5, 5)
    ids, lengths = run.encode(["I love this so much today"])  # padded to maxlen = 12
    assert ids.shape == (1, 12)
    a = run.model.states(jnp.asarray(ids), jnp.asarray(lengths))
    np.testing.assert_allclose(result.a, np.asarray(a[0, : len(tokens)]).T, atol=1e-5)
    # y after the last token is the model's prediction for the whole text
    np.testing.assert_allclose(result.y[-1], run.predict_proba(["I love this so much today"])[0], atol=1e-5)


def test_cli_inspect_json_and_figures(run_dir, tmp_path):
    out = tmp_path / "fig"
    result = runner.invoke(app, ["inspect", str(run_dir), "so sad today", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tokens"] == ["so", "sad", "today"] and data["units"] == 10 and data["timesteps"] == 3
    assert np.asarray(data["a"]).shape == (10, 3) and np.asarray(data["y"]).shape == (3, 3)
    assert data["predictions"][-1] in ("anger", "joy", "sadness")
    assert out.with_suffix(".png").is_file() and out.with_suffix(".svg").is_file()


def test_cli_inspect_prints_the_matrix(run_dir, tmp_path):
    result = runner.invoke(app, ["inspect", str(run_dir), "i love this", "--out", str(tmp_path / "h")])
    assert result.exit_code == 0, result.output
    assert "p=10 units (rows) × T=3 timesteps" in result.output and "love" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/run", "hello"], "no such run folder"),
        (["elman:poems", "hello"], "unknown dataset"),
        (["elman:xor", "   "], "the text is empty"),
    ],
)
def test_cli_inspect_wrong_arguments(args, message):
    result = runner.invoke(app, ["inspect", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_inspect_elman_sequence_unknown_word():
    from rnnlab.models import sequence_model
    from rnnlab.teach.elman import data as elman

    data = elman.load("sentences", size=50)
    model = sequence_model("elman", data.k, 8, data.q, key=jax.random.key(0))
    result = ins.inspect_sequence(model, data, ["man", "eat", "cookie"])
    assert result.a.shape == (8, 3) and result.y.shape == (3, 29)
    with pytest.raises(ValueError, match="unicorn"):
        ins.inspect_sequence(model, data, ["man", "see", "unicorn"])


def test_demo_saves_a_run_that_inspect_and_explain_read(tmp_path):
    result = runner.invoke(app, ["demo", "--only", "xor", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "the XOR bit (every 3rd)" in result.output
    assert (tmp_path / "elman-xor.png").is_file() and (tmp_path / "elman-xor.svg").is_file()
    run_dir = tmp_path / "elman-xor-run"
    shown = runner.invoke(app, ["inspect", str(run_dir), "1 1 0 0 1 1", "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["tokens"] == list("110011") and np.asarray(data["a"]).shape == (8, 6)
    # after "1 1" the next bit is their XOR, 0; after "0 1", 1: the trained network knows both
    assert data["predictions"][1] == "0" and data["predictions"][4] == "1"
    explained = runner.invoke(app, ["explain", str(run_dir), "--json"])
    assert explained.exit_code == 0, explained.output
    assert json.loads(explained.output)["total"] == 8 * (1 + 8 + 1) + (8 + 1)
    wrong = runner.invoke(app, ["inspect", str(run_dir), "1 2 0"])
    assert wrong.exit_code == 2 and "not in elman:xor's vocabulary: 2" in wrong.output


def test_cli_demo_wrong_arguments():
    result = runner.invoke(app, ["demo", "--only", "poems"])
    assert result.exit_code == 2 and "unknown --only" in result.output
    result = runner.invoke(app, ["demo", "--epochs", "0"])
    assert result.exit_code == 2 and "--epochs must be at least 1" in result.output


def test_the_terminal_matrix_fits_80_columns_and_says_what_it_left_out():
    from rich.console import Console

    T = 40
    result = ins.Inspection(np.linspace(-1, 1, 8 * T).reshape(8, T), [f"token{t}" for t in range(T)],
                            np.full((T, 2), 0.5), ("neg", "pos"))
    console = Console(width=80, record=True, color_system=None)
    console.print(views.terminal(result, width=80))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    said = " ".join(" ".join(lines).split())
    shown = int(said.split("shown: the first ")[1].split(" of 40 steps")[0])
    assert 8 <= shown < T and "all of them in the picture and in --json" in said
    assert len(lines[1].split()) == shown                        # every column it keeps, whole


def test_a_bidirectional_run_says_what_its_y_t_shows(run_dir):
    from rnnlab.checkpoint import load_run

    result = ins.inspect_run(load_run(run_dir), "i love this")
    assert "after reading tokens 1..t" not in result.y_label
    assert "backward rows have each read the text from its end" in result.y_label


def test_an_unwritable_out_is_one_line(run_dir):
    result = runner.invoke(app, ["inspect", str(run_dir), "so sad", "--out", "/proc/no/such/heatmap"])
    assert result.exit_code == 2 and "--out /proc/no/such/heatmap: cannot write" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_the_picture_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    result = ins.Inspection(np.zeros((3, 4)), ["a", "b", "c", "d"])
    views.render(result, tmp_path / "h")
    before = (tmp_path / "h.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png", "h.svg"]  # no temporary file left
    import matplotlib.figure

    def full_disk(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    with pytest.raises(OSError):
        views.render(result, tmp_path / "h")
    assert (tmp_path / "h.png").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "h.png", "h.svg"]
