"""`rnnlab train` takes Elman's streams (many-to-many) as well as labelled texts (many-to-one)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rnnlab.cli import app
from rnnlab.teach.elman.experiments import load_sequence

runner = CliRunner()


def test_train_on_an_elman_stream_saves_a_sequence_run(tmp_path):
    out = tmp_path / "xor"
    result = runner.invoke(app, ["train", "elman:xor", "--out", str(out), "--units", "4", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "sequence" and config["config"]["task"] == "elman:xor" and config["config"]["units"] == 4
    assert (out / "model.safetensors").is_file()
    run = load_sequence(out)
    assert run.model.units == 4  # --units reached the model: p = 4


def test_commands_that_need_a_label_per_text_refuse_elman_streams(tmp_path):
    result = runner.invoke(app, ["tune", "elman:xor", "--units", "4", "--out", str(tmp_path / "t")])
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())  # Rich wraps the message in a box
    assert "not a label per text" in said
