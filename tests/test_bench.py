"""`rnnlab bench` from the installed package: where its JSON goes, what it prints (figures and ratios in 80
columns, no verdicts). The timing itself is replaced by a fixed result: speed is the benchmark's to show."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rnnlab import bench
from rnnlab.cli import app


def fake_run(scenarios, cells, runs, log=print):
    """What `bench.run` returns, for two rows whose times are known: rnnlab 2 ms, PyTorch 5, Keras 3, scan 4."""
    def times(ms):
        return {"median_s": ms / 1e3, "p10_s": ms / 1e3, "p90_s": ms / 1e3, "compile_s": 0.5, "runs": runs}

    res = {"rnnlab": times(2.0), "rnnlab-scan": times(4.0), "torch": times(5.0), "keras": times(3.0)}
    rows = [bench._rows(s, c, "fwd+bwd", res, 1e9, 100.0, {"B": 64}) for s in scenarios for c in cells]
    for row in rows:
        log(bench._line(row))
    return {"machine": {"threads": 2, "cpu": "test"}, "gemm": {"limit_gflops": 100.0}, "runs": runs, "rows": rows}


@pytest.fixture
def runner(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "missing_peers", lambda: [])  # the peers are faked too: make test has no Keras
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_the_json_goes_to_the_current_folder_by_default_and_where_out_says(runner, tmp_path):
    res = runner.invoke(app, ["bench", "--scenarios", "S1", "--cells", "gru"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert [r["cell"] for r in saved["rows"]] == ["gru"] and saved["rows"][0]["speedup_vs_torch"] == 2.5
    res = runner.invoke(app, ["bench", "--scenarios", "S1,S3", "--cells", "lstm", "--out", "sub/x.json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "sub" / "x.json").read_text())["rows"]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["speed.json", "x.json"]  # no temporaries


def test_it_prints_figures_and_ratios_in_80_columns_and_no_verdicts(runner):
    res = runner.invoke(app, ["bench", "--scenarios", "S1,S4", "--cells", "elman,lstm"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80, res.output
    assert "2.000" in res.output and "2.50" in res.output and "1.50" in res.output  # ms, ×torch, ×keras
    for verdict in ("met", "MISSED", "goal"):
        assert verdict not in res.output


def test_json_flag_prints_the_result_as_json(runner):
    res = runner.invoke(app, ["bench", "--scenarios", "S3", "--cells", "elman", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"][0]["scenario"] == "S3" and out["rows"][0]["speedup_vs_rnnlab-scan"] == 2.0


def test_without_the_peers_it_says_which_extra_brings_them(runner, monkeypatch):
    monkeypatch.setattr(bench, "missing_peers", lambda: ["keras"])
    res = runner.invoke(app, ["bench", "--scenarios", "S1", "--cells", "gru"])
    assert res.exit_code == 2 and "keras not installed" in res.output and "rnnlab[bench]" in res.output
