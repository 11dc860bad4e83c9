"""`rnnlab serve`: the JSON API through Starlette's test client and a real uvicorn server on a loopback port.

The references are independent of the server: the run's own `predict_proba` and `trace`, each layer run
by itself on the unpadded text, `rnnlab explain --json`, and the word tree recomputed by `rnnlab.teach.elman`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

with warnings.catch_warnings():  # Starlette's test client asks for httpx2 and still runs on httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from rnnlab.cli.app import app as cli  # noqa: E402
from rnnlab.serve import (  # noqa: E402
    create_app,
    limits,
    load_runs,
)

runner = CliRunner()

JOY = ["so happy today", "i love this", "what a great day", "love it so much", "happy happy joy", "great fun"]
SAD = ["so sad today", "i hate this", "what a bad day", "this is awful", "sad and tired", "awful news"]


def train_tiny_run(out: Path, *, bidirectional: bool, layers: int = 1, seed: int = 0) -> Path:
    """A classifier (k=8, p=6) trained with Adam for 40 steps on the dozen texts above (seconds), saved
    with `checkpoint.save_run` as `rnnlab train` saves its runs."""
    import equinox as eqx
    import optax

    from rnnlab.checkpoint import save_run
    from rnnlab.data.batches import encode
    from rnnlab.data.tokenize import tokenize
    from rnnlab.data.vocab import Vocabulary
    from rnnlab.models import ModelConfig, TextClassifier

    texts = JOY + SAD
    vocab = Vocabulary(["<pad>", "<unk>", *sorted({w for t in texts for w in tokenize(t)})])
    ids, lengths = (jnp.asarray(a) for a in encode(texts, vocab, 12))
    labels = jnp.asarray([0] * len(JOY) + [1] * len(SAD))
    config = ModelConfig(vocab_size=len(vocab), classes=2, k=8, cell="gru", units=6, layers=layers,
                         bidirectional=bidirectional, pooling="mean", dropout=0.0)
    model = TextClassifier(config, key=jax.random.key(seed))
    opt = optax.adam(3e-2)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(ids, lengths), labels).mean()  # noqa: E731
        grads = eqx.filter_grad(loss)(model)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state

    for _ in range(40):
        model, state = step(model, state)
    save_run(out, model, {"maxlen": 12}, vocab, ("joy", "sadness"), "tiny", "macro_f1")
    return out


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {
        "uni": train_tiny_run(root / "uni", bidirectional=False, layers=2),
        "bi": train_tiny_run(root / "bi", bidirectional=True, layers=2),
    }


@pytest.fixture(scope="module")
def runs(run_dirs):
    return load_runs([run_dirs["uni"], run_dirs["bi"]], warm=False)  # the command's own start warms (tested there)


@pytest.fixture(scope="module")
def client(runs):
    with TestClient(create_app(runs)) as c:
        yield c


def test_predict_gives_the_runs_own_probabilities_in_order(client, run_dirs):
    from rnnlab.checkpoint import load_run

    texts = ["so happy today", "this is awful", "", "unknown words only", "love love love " * 30]
    got = client.post("/predict", json={"texts": texts, "run": "bi"})
    assert got.status_code == 200, got.text
    predictions = got.json()["predictions"]
    run = load_run(run_dirs["bi"])
    expected = run.predict_proba(texts)
    assert len(predictions) == len(texts)
    for row, pred in zip(expected, predictions, strict=True):
        assert list(pred["probabilities"]) == ["joy", "sadness"]
        np.testing.assert_allclose(list(pred["probabilities"].values()), row, atol=1e-5)
        assert pred["label"] == run.labels[int(np.argmax(row))]
    # the same through the run named in the path
    again = client.post("/runs/bi/predict", json={"texts": texts})
    assert again.json()["predictions"] == predictions


@pytest.mark.parametrize("name", ["uni", "bi"])
def test_trace_gives_each_layer_and_direction(client, run_dirs, name):
    from rnnlab.checkpoint import load_run
    from rnnlab.layers import Bidirectional

    text = "i love this great day"
    got = client.post("/trace", json={"text": text, "run": name})
    assert got.status_code == 200, got.text
    data = got.json()
    run = load_run(run_dirs[name])
    tokens, a_last, y = run.trace(text)
    assert data["tokens"] == tokens == ["i", "love", "this", "great", "day"]
    bidirectional = name == "bi"
    assert [(lay["layer"], lay["direction"]) for lay in data["layers"]] == (
        [(0, "forward"), (0, "backward"), (1, "forward"), (1, "backward")] if bidirectional
        else [(0, "forward"), (1, "forward")])
    for lay in data["layers"]:
        assert np.asarray(lay["a"]).shape == (len(tokens), 6)  # T rows of p numbers
    # each layer by itself on the text's own T steps (no padding), its input the layer below's output
    x = run.model.embed(jnp.asarray(run.vocab.encode(tokens)))
    per_direction = iter(data["layers"])
    for layer in run.model.rnn.layers:
        x, _ = layer(x)
        halves = (x[:, :6], x[:, 6:]) if isinstance(layer, Bidirectional) else (x,)
        for half in halves:
            np.testing.assert_allclose(next(per_direction)["a"], np.asarray(half), atol=1e-5)
    np.testing.assert_allclose(np.concatenate([lay["a"] for lay in data["layers"][-len(halves):]], axis=1),
                               np.asarray(a_last), atol=1e-5)
    assert data["outputs"] == ["joy", "sadness"]
    if bidirectional:
        assert data["y"] is None and "both ways" in data["y_note"]
    else:
        np.testing.assert_allclose(data["y"], np.asarray(y), atol=1e-5)
        np.testing.assert_allclose(data["y"][-1], run.predict_proba([text])[0], atol=1e-5)


def test_forward_states_equal_the_loop_written_out(client, run_dirs):
    """Layer 0 of the one-way run against a_t = cell(a_{t-1}, x_t) called once per token."""
    from rnnlab.checkpoint import load_run

    run = load_run(run_dirs["uni"])
    data = client.post("/trace", json={"text": "what a bad day", "run": "uni"}).json()
    layer = run.model.rnn.layers[0]
    state = layer.initial_state()
    states = []
    for x_t in run.model.embed(jnp.asarray(run.vocab.encode(data["tokens"]))):
        state = layer.step(state, x_t)
        states.append(np.asarray(layer.cell.hidden(state)))
    np.testing.assert_allclose(data["layers"][0]["a"], np.stack(states), atol=1e-5)


@pytest.mark.parametrize(
    ("body", "args"),
    [
        ({"cell": "elman", "k": 50, "p": 10, "T": 20}, ["--cell", "elman", "-k", "50", "-p", "10", "-T", "20"]),
        ({"cell": "gru", "k": 7, "p": 33, "T": 3, "B": 5, "q": 4, "layers": 2},
         ["--cell", "gru", "-k", "7", "-p", "33", "-T", "3", "-B", "5", "-q", "4", "--layers", "2"]),
        ({"cell": "lstm", "k": 100, "p": 64, "T": 2000, "q": 0, "every_step": True},
         ["--cell", "lstm", "-k", "100", "-p", "64", "-T", "2000", "-q", "0", "--every-step"]),
        ({"cell": "mingru", "k": 9, "p": 12, "T": 40}, ["--cell", "mingru", "-k", "9", "-p", "12", "-T", "40"]),
        ({"cell": "minlstm", "k": 9, "p": 12, "T": 40, "layers": 2},
         ["--cell", "minlstm", "-k", "9", "-p", "12", "-T", "40", "--layers", "2"]),
    ],
)
def test_explain_is_what_the_command_gives(client, body, args):
    got = client.post("/explain", json={**body, "misreadings": False})
    assert got.status_code == 200, got.text
    data = got.json()
    expected = json.loads(runner.invoke(cli, ["explain", *args, "--json"]).output)
    assert {k: data[k] for k in expected} == expected
    assert "misreadings" not in data
    # T changes the work and the activations, never the parameters
    assert len({row["total"] for row in data["at_T"]}) == 1
    flops = [row["flops_sequence"] for row in data["at_T"]]
    assert flops == sorted(flops) and flops[0] < flops[-1]
    assert data["p_doubled"]["p"] == 2 * body["p"] and data["p_doubled"]["total"] > data["total"]
    assert data["svg"].startswith("<svg") and f"T={body['T']} timesteps" in data["svg"]


def test_explain_answers_the_misreadings_by_running_the_layer(client):
    from rnnlab.teach.explain import build, explain

    data = client.post("/explain", json={"cell": "gru", "k": 5, "p": 4, "T": 30}).json()
    mr = data["misreadings"]
    assert mr["steps_run"] == 30 and mr["all_units_changed"]
    assert [s["t"] for s in mr["steps"]] == [1, 2, 3, 4, 5, 6, 7, 30]
    assert all(s["a"] == [4] and s["x"] == [5] and s["changed"] == 4 for s in mr["steps"])
    sw = mr["same_weights"]
    layer_count = explain(build("gru", features=5, units=4).rnn).total  # the layer, without y_t's readout
    assert sw["parameters_short"] == sw["parameters_long"] == layer_count
    assert sw["a_short_shape"] == [20, 4] and sw["a_long_shape"] == [2000, 4] and sw["max_difference"] < 1e-5


def test_runs_and_health(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "runs": ["uni", "bi"]}
    runs = client.get("/runs").json()
    assert [r["name"] for r in runs["runs"]] == ["uni", "bi"]
    uni = client.get("/runs/uni").json()
    assert uni["kind"] == "classifier" and uni["labels"] == ["joy", "sadness"] and uni["p"] == 6
    assert uni["bidirectional"] is False and uni["layers"] == 2
    from rnnlab.cells import CELLS

    assert set(runs["cells"]) == set(CELLS) - {"rnn"}  # every cell, aliases left out


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/predict", b"{\"texts\": [\"a\"", 400, "malformed JSON: Expecting"),
        ("/predict", b"[1, 2]", 400, "must be a JSON object"),
        ("/predict", b"\xff\xfe", 400, "not UTF-8"),
        ("/predict", b"[" * 50_000, 400, "malformed JSON"),
        ("/explain", b'{"cell": "elman", "k": ' + b"7" * 5000 + b', "p": 5, "T": 5}', 400, "malformed JSON"),
        ("/trace", b'{"text": "\\ud800 hi", "run": "uni"}', 422, "lone surrogate"),
        ("/predict", {"texts": ["a"] * (limits.MAX_TEXTS + 1), "run": "uni"}, 422, "at most 1,000 per request"),
        ("/predict", {"texts": ["a" * (limits.MAX_CHARS + 1)], "run": "uni"}, 422, "at most 10,000 per text"),
        ("/predict", {"texts": "so happy", "run": "uni"}, 422, '"texts": a list of strings'),
        ("/predict", {"texts": [], "run": "uni"}, 422, '"texts": a list of strings'),
        ("/predict", {"texts": ["ok", 3], "run": "uni"}, 422, '"texts"[1] must be a string; got int 3'),
        ("/predict", {"text": ["a"], "run": "uni"}, 422, "unknown field 'text'"),
        ("/predict", {"texts": ["a"]}, 422, '2 runs are loaded (uni, bi): name one with "run"'),
        ("/predict", {"texts": ["a"], "run": "../../etc"}, 404, "no run named '../../etc'; loaded: uni, bi"),
        ("/runs/nope/predict", {"texts": ["a"]}, 404, "no run named 'nope'"),
        ("/trace", {"text": None, "run": "uni"}, 422, '"text" must be a string; got null'),
        ("/trace", {"text": "x" * (limits.MAX_CHARS + 1), "run": "bi"}, 422, "at most 10,000 per text"),
        ("/explain", {"cell": "transformer", "k": 5, "p": 5, "T": 5}, 422, '"cell" must be one of elman'),
        ("/explain", {"cell": "elman", "k": 5, "p": 0, "T": 5}, 422, '"p" must be from 1 to 2,048; got 0'),
        ("/explain", {"cell": "elman", "k": 5, "p": 5}, 422, 'expected "T": an integer'),
        ("/explain", {"cell": "elman", "k": 5, "p": 5, "T": 5.5}, 422, '"T" must be an integer; got float'),
        ("/explain", {"cell": "elman", "k": 5, "p": 5, "T": True}, 422, '"T" must be an integer; got bool'),
        ("/explain", {"cell": "lstm", "k": 2048, "p": 2048, "T": 5, "layers": 4}, 422, "at most 20,000,000"),
        ("/explain", {"cell": "elman", "k": 5, "p": 5, "T": 5, "file": "/etc/passwd"}, 422, "unknown field 'file'"),
    ],
)
def test_bad_requests_get_one_line_and_the_server_goes_on(client, path, body, status, message):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {
        "json": body}
    got = client.post(path, **kwargs)
    assert got.status_code == status, got.text
    error = got.json()["error"]
    assert message in error and "\n" not in error
    assert client.post("/predict", json={"texts": ["fine"], "run": "uni"}).status_code == 200


def test_bodies_over_the_limit_are_refused_unread(client):
    big = json.dumps({"texts": ["a" * 9000] * 120, "run": "uni"}).encode()  # 1.08 MB of valid JSON
    assert len(big) > limits.MAX_BODY
    got = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert got.status_code == 413 and "at most 1,000,000 are read" in got.json()["error"]

    def chunks():  # no Content-Length: the server counts as it reads
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    got = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert got.status_code == 413 and "over 1,000,000 bytes" in got.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_pages_and_unknown_routes(client):
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/playground.js">' in page.text
    assert client.get("/run/uni").status_code == 200
    assert client.get("/run/nope").status_code == 404
    assert "POST /predict" in client.get("/docs").text
    assert client.get("/predict").status_code == 405
    missing = client.get("/nothing/here")
    assert missing.status_code == 404 and missing.json()["error"] == "no such page: /nothing/here"


def test_the_pages_fetch_nothing_from_elsewhere(client):
    import re

    from rnnlab.serve.app import STATIC

    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path.name
        assert not re.search(r"from \"(https?:)?//|import\(\"(https?:)?//", text), path.name
        for ref in re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", text):
            assert client.get(ref).status_code == 200, ref
        for ref in re.findall(r"from \"\./([^\"]+)\"", text):
            assert (STATIC / ref).is_file(), ref


def test_an_elman_sentences_run_shows_its_word_tree(tmp_path):
    from rnnlab.teach.elman import data as elman
    from rnnlab.teach.elman import experiments
    from rnnlab.teach.elman.views import cluster_words

    run = experiments.train_sequence("elman:sentences", units=8, epochs=1, size=200)
    folder = experiments.save_sequence(run, tmp_path / "sentences")
    loaded = load_runs([folder])
    with TestClient(create_app(loaded)) as c:
        info = c.get("/runs/sentences").json()
        assert info["kind"] == "sequence" and info["task"] == "elman:sentences" and info["p"] == 8
        leaves = []

        def walk(node):
            if "children" in node:
                assert len(node["children"]) == 2
                for child in node["children"]:
                    walk(child)
            else:
                leaves.append(node["word"])
                assert node["noun"] == (node["word"] in elman.NOUNS)

        walk(info["tree"])
        ev = experiments.evaluate(run.model, run.data)
        words, means = experiments.mean_hidden_by_word(ev)
        assert sorted(leaves) == sorted(words)
        Z = cluster_words(words, means)
        assert info["tree"]["distance"] == pytest.approx(Z[-1, 2], abs=1e-3)  # the root's join
        trace = c.post("/trace", json={"text": "man eat cookie"}).json()
        assert trace["tokens"] == ["man", "eat", "cookie"]
        assert np.asarray(trace["layers"][0]["a"]).shape == (3, 8)
        assert np.asarray(trace["y"]).shape == (3, len(run.data.vocab))
        np.testing.assert_allclose(np.asarray(trace["y"]).sum(1), 1.0, atol=1e-5)
        unknown = c.post("/trace", json={"text": "man see unicorn"})
        assert unknown.status_code == 422 and "unicorn" in unknown.json()["error"]
        assert c.post("/predict", json={"texts": ["man"]}).status_code == 422


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent", "no such run folder"),
        (lambda d: d, "not a run folder: it has no config.json"),
        (lambda d: (d / "config.json").write_text("{oops") and d, "cannot read the run"),
        (lambda d: (d / "config.json").write_text("{}") and d, "cannot read the run"),
        (lambda d: (d / "config.json").write_text("[]") and d, "cannot read the run"),
    ],
)
def test_a_bad_run_folder_stops_the_start_in_one_line(tmp_path, make, message):
    folder = make(tmp_path)
    result = runner.invoke(cli, ["serve", str(folder), "--port", "0"])
    assert result.exit_code == 2
    assert message in result.output and str(folder) in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # one line (wrapped at most once)


@pytest.mark.parametrize("maxlen", ["twelve", 0])
def test_a_run_whose_config_cannot_predict_stops_the_start_in_one_line(tmp_path, run_dirs, maxlen):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_dirs["uni"], folder)
    info = json.loads((folder / "config.json").read_text())
    info["config"]["maxlen"] = maxlen
    (folder / "config.json").write_text(json.dumps(info))
    result = runner.invoke(cli, ["serve", str(folder), "--port", "0"])
    assert result.exit_code == 2 and "maxlen" in result.output and "Traceback" not in result.output


def test_the_command_binds_loopback_and_warns_otherwise(monkeypatch, run_dirs):
    import socket

    import uvicorn

    from rnnlab.cli import serve as serve_cli

    started = []

    class Server:  # uvicorn's, stopped before it serves (uvicorn's logging would write to the runner's streams)
        def __init__(self, config):
            pass

        def run(self, sockets):
            started.append(sockets[0].getsockname())
            sockets[0].close()

    monkeypatch.setattr(uvicorn, "Config", lambda app, **kwargs: None)
    monkeypatch.setattr(uvicorn, "Server", Server)
    result = runner.invoke(cli, ["serve", str(run_dirs["uni"]), "--port", "0", "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["host"] == "127.0.0.1" and line["runs"] == ["uni"] and started[0][0] == "127.0.0.1"
    assert "warning" not in result.output
    # another host warns; the socket is still taken on loopback here, so that nothing is exposed
    real_bind = serve_cli.bind
    monkeypatch.setattr(serve_cli, "bind", lambda host, port: real_bind("127.0.0.1", port))
    result = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "warning: listening on 0.0.0.0" in result.output and "no authentication" in result.output
    assert serve_cli.is_loopback("::1") and serve_cli.is_loopback("localhost") and not serve_cli.is_loopback("0.0.0.0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = runner.invoke(cli, ["serve", "--port", str(taken.getsockname()[1])])
    assert busy.exit_code == 2 and "cannot listen on 127.0.0.1:" in busy.output


def test_the_batcher_answers_each_request_its_own_texts_in_fewer_calls():
    import asyncio
    import time

    from rnnlab.serve.batching import Batcher

    calls = []

    def predict(texts):
        calls.append(len(texts))
        time.sleep(0.02)  # while a batch runs, the other requests wait and make the next one
        return [t.upper() for t in texts]

    async def main():
        batcher = Batcher(predict, most=50)
        asks = [[f"r{i}-t{j}" for j in range(i % 3 + 1)] for i in range(40)]
        answers = await asyncio.gather(*(batcher(texts) for texts in asks))
        return asks, answers

    asks, answers = asyncio.run(main())
    assert answers == [[t.upper() for t in texts] for texts in asks]
    assert sum(calls) == sum(len(a) for a in asks) and len(calls) < len(asks) and max(calls) <= 50

    def broken(texts):
        raise RuntimeError("no model")

    async def fails():
        batcher = Batcher(broken)
        return await asyncio.gather(batcher(["a"]), batcher(["b"]), return_exceptions=True)

    assert [str(e) for e in asyncio.run(fails())] == ["no model", "no model"]


def test_a_batcher_shared_by_loops_in_threads_answers_every_request():
    """Several event loops at once (one per thread, as a test client outside `with` makes): each loop's
    requests are drained on that loop, none is dropped by another's drain."""
    import asyncio
    import threading
    import time

    from rnnlab.serve.batching import Batcher

    def predict(texts):
        time.sleep(0.005)
        return [t.upper() for t in texts]

    batcher, answers = Batcher(predict), {}

    def worker(i):
        async def main():
            return await asyncio.wait_for(asyncio.gather(*(batcher([f"{i}-{j}"]) for j in range(20))), 30)

        answers[i] = asyncio.run(main())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == {i: [[f"{i}-{j}".upper()] for j in range(20)] for i in range(4)}


def test_the_parameter_bound_counts_what_explain_counts():
    """/explain refuses by `_count`: it must be explain's own count (the min cells have no U_a)."""
    from rnnlab.serve.playground import _count
    from rnnlab.teach.explain import build, explain

    for cell in ("elman", "lstm", "mingru", "minlstm"):
        assert _count(cell, 5, 7, 2, 2) == explain(build(cell, features=5, units=7, outputs=2, layers=2)).total


def test_a_batcher_left_on_an_ended_loop_drains_on_the_next():
    """A drain pending on a loop that ended (as one of Starlette's test client outside `with`) must not
    keep the next loop's requests waiting."""
    import asyncio

    from rnnlab.serve.batching import Batcher

    batcher = Batcher(lambda texts: [t.upper() for t in texts])

    left = []

    async def enqueue():
        left.append(asyncio.ensure_future(batcher(["a"])))
        await asyncio.sleep(0)  # the request waits and its drain is under way

    first = asyncio.new_event_loop()
    first.run_until_complete(enqueue())
    first.close()  # abandoned, the drain still pending

    async def second():
        return await asyncio.wait_for(batcher(["b"]), 10)

    assert asyncio.run(second()) == ["B"]


@contextlib.contextmanager
def serving(app):
    """`app` on a real uvicorn server, on a free loopback port, in a thread: yields its URL once it answers."""
    import httpx
    import uvicorn

    from rnnlab.cli.serve import bind

    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                threading.Event().wait(0.05)
        yield url
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server(runs):
    with serving(create_app(runs)) as url:
        yield url


def test_a_real_server_answers_and_survives_bad_requests(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.post("/predict", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
        assert c.post("/predict", content=b"x" * (limits.MAX_BODY + 10)).status_code == 413
        got = c.post("/predict", json={"texts": ["so happy today", "so sad today"], "run": "uni"})
        assert got.status_code == 200 and len(got.json()["predictions"]) == 2
        assert c.post("/trace", json={"text": "i love this", "run": "bi"}).status_code == 200


def test_400_requests_16_at_a_time_all_answered(server, runs):
    texts = JOY + SAD
    expected = {t: p["label"] for t, p in zip(texts, runs["uni"].predict(texts), strict=True)}
    with httpx.Client(base_url=server, timeout=60, limits=httpx.Limits(max_connections=16)) as c:

        def one(i: int) -> tuple[int, str, str]:
            text = texts[i % len(texts)]
            r = c.post("/predict", json={"texts": [text], "run": "uni"})
            return r.status_code, text, r.json()["predictions"][0]["label"] if r.status_code == 200 else r.text

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(400)))
    assert [status for status, _, _ in answers] == [200] * 400
    assert all(label == expected[text] for _, text, label in answers)


def test_the_command_serves_until_stopped(run_dirs):
    """`rnnlab serve RUN --port 0 --json` in its own process: the address it prints answers."""
    command = [sys.executable, "-c", "from rnnlab.cli import main; main()", "serve", str(run_dirs["uni"]),
               "--port", "0", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = json.loads(proc.stdout.readline())
        assert line["host"] == "127.0.0.1"
        got = httpx.post(line["url"] + "predict", json={"texts": ["so happy today"]}, timeout=60)
        assert got.status_code == 200 and got.json()["run"] == "uni"
    finally:
        proc.terminate()
        proc.wait(30)
