"""Elman's (1990) datasets follow the paper's definitions, and the experiments reproduce its findings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from rnnlab.teach.elman import data as elman

# The paper's Table 1, written out again here: Consonant Vowel Interrupted High Back Voiced.
PAPER_CODES = {"b": "101001", "d": "101101", "g": "101011", "a": "010011", "i": "010101", "u": "010111"}


def test_letter_encodings_are_the_papers():
    for letter, code in PAPER_CODES.items():
        assert "".join(map(str, elman.LETTERS[letter])) == code
    data = elman.load("elman:letters", seed=3, size=200)
    stream = np.concatenate([data.inputs[0], data.targets[0, -1:]])
    for token, row in zip(data.tokens, stream, strict=True):
        assert "".join(str(int(v)) for v in row) == PAPER_CODES[token]


def test_letters_expand_each_consonant_to_its_syllable():
    data = elman.load("letters", seed=1, size=300)
    text = "".join(data.tokens)
    assert text == "".join("".join(s) for s in data.segments)
    assert {"".join(s) for s in data.segments} == {"ba", "dii", "guuu"}
    # every consonant is followed by exactly its vowels, then the next consonant
    i = 0
    while i < len(text):
        syllable = {"b": "ba", "d": "dii", "g": "guuu"}[text[i]]
        assert text[i : i + len(syllable)] == syllable
        i += len(syllable)
    assert len(data.segments) == 300


def test_xor_every_third_bit_is_the_xor_of_the_two_before():
    data = elman.load("elman:xor", seed=7, size=500)
    bits = np.array([int(b) for b in data.tokens])
    assert len(bits) == 1500
    assert np.array_equal(bits[2::3], bits[0::3] ^ bits[1::3])
    assert np.array_equal(data.inputs[0, :, 0], bits[:-1]) and np.array_equal(data.targets[0, :, 0], bits[1:])
    # the first two bits of each triple are random: both values occur, about equally often
    assert 0.4 < bits[0::3].mean() < 0.6 and 0.4 < bits[1::3].mean() < 0.6


def test_sentences_follow_the_templates():
    data = elman.load("elman:sentences")
    assert len(data.segments) == 10_000
    assert len(elman.TEMPLATES) == 16 and len(elman.CATEGORIES) == 12 and len(elman.WORDS) == 29
    used = set()
    for sentence in data.segments:
        template = elman.matches_template(sentence)
        assert template is not None, sentence
        used.add(template)
    assert len(used) == 16  # all 16 templates occur in 10,000 sentences
    assert data.tokens == tuple(w for s in data.segments for w in s)  # concatenated without breaks
    assert 25_000 < data.T < 30_000  # the paper: 27,534 words
    # one-hot words, next word as the target
    assert np.array_equal(data.inputs[0].sum(-1), np.ones(data.T))
    assert np.array_equal(data.inputs[0, 1:], data.targets[0, :-1])
    assert [data.vocab[i] for i in data.labels[0, :5]] == list(data.tokens[1:6])


def test_matches_template_rejects_non_sentences():
    assert elman.matches_template(("man", "eat", "cookie")) == ("HUM", "EAT", "FOOD")
    assert elman.matches_template(("cookie", "eat", "man")) is None
    assert elman.matches_template(("rock", "sleep")) is None  # INANIM INTRAN is no template
    assert elman.matches_template(("dragon", "eat")) is None


def test_same_seed_same_stream_other_seed_other_stream():
    a, b, c = (elman.load("sentences", seed=s, size=50) for s in (0, 0, 1))
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_unknown_names_and_sizes_are_refused():
    with pytest.raises(ValueError, match="elman:xor, elman:letters, elman:sentences"):
        elman.load("elman:words")
    with pytest.raises(ValueError, match="at least 2"):
        elman.load("xor", size=1)


def _stream(words: list[str]) -> elman.ElmanData:
    data = elman.load("sentences", size=2)
    return dataclasses.replace(data, tokens=tuple(words), inputs=np.zeros((1, len(words) - 1, 29), np.float32))


def test_best_prediction_matches_hand_computed_probabilities():
    data = _stream(["lion", "eat", "cookie", "man", "sleep"])
    P = elman.next_word_distribution(data)
    p = {w: P[:, i] for i, w in enumerate(data.vocab)}
    assert np.allclose(P.sum(1), 1.0)
    # "lion" opens the stream: AGRESS DESTROY FRAG or AGRESS EAT {HUM, ANIM, FOOD}
    assert p["eat"][0] == pytest.approx(3 / 4) and p["break"][0] == pytest.approx(1 / 8)
    assert p["smash"][0] == pytest.approx(1 / 8) and p["man"][0] == 0
    # "lion eat": HUM, ANIM or FOOD, one template each
    assert p["man"][1] == pytest.approx(1 / 12) and p["cat"][1] == pytest.approx(1 / 9)
    assert p["cookie"][1] == pytest.approx(1 / 9) and p["rock"][1] == 0
    # "... cookie": a sentence has ended; 7 of 16 templates start with HUM (4 words)
    assert p["man"][2] == pytest.approx(7 / 64) and p["rock"][2] == pytest.approx(1 / 16 / 3)
    # "man": 7 HUM templates; "see" is PERCEPT or TRAN, "break" DESTROY or AGPAT
    assert p["eat"][3] == pytest.approx(1 / 7)
    assert p["see"][3] == pytest.approx(1 / 14 + 1 / 21) and p["break"][3] == pytest.approx(1 / 14 + 1 / 7)


def test_best_prediction_beats_word_frequencies():
    data = elman.load("sentences", size=2000)
    P = elman.next_word_distribution(data)
    best = -np.log2(P[np.arange(data.T), data.labels[0]]).mean()
    freq = np.bincount(data.labels[0], minlength=29) / data.T
    unigram = -np.log2(freq[data.labels[0]]).mean()
    assert 2.5 < best < unigram - 1.0


# ------------------------------------------------------------------------------------------ experiments


def test_xor_error_dips_on_every_third_bit():
    from rnnlab.teach.elman import experiments, views

    run = experiments.train_sequence("elman:xor", seed=0)
    result = views.report(run)
    err = result["error_by_position"]
    assert err["XOR bit"] < 0.1
    assert err["first bit"] > 0.2 and err["second bit"] > 0.2  # coin flips: about 0.25 at best


def test_letters_error_high_on_consonants_low_on_vowels():
    from rnnlab.teach.elman import experiments, views

    run = experiments.train_sequence("elman:letters", seed=0)
    result = views.report(run)
    assert result["vowels"] < 0.05 < 0.3 < result["consonants"]


def test_sentence_tree_splits_nouns_from_verbs(tmp_path):
    from rnnlab.teach.elman import experiments, views

    run = experiments.train_sequence("elman:sentences", seed=0)
    result = views.report(run, tmp_path)
    left, right = result["top_split"]
    assert {frozenset(left), frozenset(right)} == {elman.NOUNS, elman.VERBS}
    assert result["best_bits_per_word"] < result["model_bits_per_word"] < result["unigram_bits_per_word"]
    assert (tmp_path / "elman-sentences-tree.png").stat().st_size > 1000


def test_sequence_run_saved_and_loaded_gives_the_same_predictions(tmp_path):
    import jax.numpy as jnp

    from rnnlab.cli.elman import train_elman
    from rnnlab.teach.elman import experiments

    train_elman("elman:letters", tmp_path / "run", cell="gru", units=5, epochs=2, seed=3)
    assert experiments.is_sequence_run(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["kind"] == "sequence"
    assert (tmp_path / "run" / "model.safetensors").is_file() and not (tmp_path / "run" / "sequence.json").exists()
    loaded = experiments.load_sequence(tmp_path / "run")
    assert loaded.model.layer.cell.kind == "gru" and loaded.model.units == 5 and len(loaded.history) == 2
    import rnnlab  # the one loader reads the folder by its kind: the same run

    again_loaded = rnnlab.load_run(tmp_path / "run")
    assert isinstance(again_loaded, experiments.SequenceRun) and rnnlab.runs.kind(tmp_path / "run") == "sequence"
    assert again_loaded.config == loaded.config and again_loaded.history == loaded.history
    again = experiments.train_sequence("elman:letters", cell="gru", units=5, epochs=2, seed=3)
    x = jnp.asarray(loaded.data.inputs[0, :50])
    np.testing.assert_allclose(loaded.model(x), again.model(x), atol=1e-5)
    assert loaded.data.tokens == again.data.tokens
    assert (tmp_path / "run" / "elman-letters.png").is_file()


def save_in_the_earlier_layout(run, folder):
    """`run` written as runs were before config.json held a kind: sequence.json and sequence.safetensors,
    the weights named as the earlier model named them (one `layer` beside the `readout`)."""
    from rnnlab import checkpoint

    info = {"config": {**run.config, "size": len(run.data.segments), "output": run.model.output},
            "history": run.history, "seconds": run.seconds, "result": {}}
    checkpoint.write_json(folder / "sequence.json", info)
    arrays = {name.replace(".rnn.layers[0].", ".layer."): a for name, a in checkpoint.tree_arrays(run.model).items()}
    assert set(arrays) == {".layer.cell.W_a", ".layer.cell.U_a", ".layer.cell.b_a", ".readout.W_y", ".readout.b_y"}
    checkpoint.save_arrays(folder / "sequence.safetensors", arrays, {"task": run.data.name})
    return folder


def test_a_run_in_the_earlier_layout_still_loads_and_serves(tmp_path):
    import jax.numpy as jnp

    from rnnlab.serve.runs import load_runs
    from rnnlab.teach.elman import experiments

    run = experiments.train_sequence("elman:letters", units=4, epochs=1, size=300, seed=2)
    folder = save_in_the_earlier_layout(run, tmp_path / "letters")
    assert experiments.is_sequence_run(folder) and not (folder / "config.json").exists()
    loaded = experiments.load_sequence(folder)
    x = jnp.asarray(run.data.inputs[0, :40])
    np.testing.assert_array_equal(loaded.model(x), run.model(x))
    assert loaded.history == run.history and loaded.config["task"] == "elman:letters"
    served = load_runs([folder], warm=False)["letters"]
    assert served.kind == "sequence" and served.info()["p"] == 4
    # saved again, the folder takes the one layout: config.json and model.safetensors, the old files gone
    experiments.save_sequence(loaded, folder)
    assert sorted(f.name for f in folder.iterdir()) == ["config.json", "model.safetensors"]
    np.testing.assert_array_equal(experiments.load_sequence(folder).model(x), run.model(x))


def test_a_sequence_run_is_not_written_over_a_classifier_run(tmp_path):
    from rnnlab import checkpoint
    from rnnlab.teach.elman import experiments

    folder = tmp_path / "emotion"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "classifier", "config": {}}))
    run = experiments.train_sequence("elman:xor", units=2, epochs=1, size=400, seed=0)
    with pytest.raises(checkpoint.RunError, match="holds another run"):
        experiments.save_sequence(run, folder)
    assert json.loads((folder / "config.json").read_text())["kind"] == "classifier"
    assert not experiments.is_sequence_run(folder)


def test_a_folder_is_the_run_its_config_json_names_beside_an_earlier_sequence_json(tmp_path):
    import rnnlab
    from rnnlab import checkpoint
    from rnnlab.teach.elman import experiments

    folder = tmp_path / "emotion"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "classifier", "config": {}}))
    run = experiments.train_sequence("elman:xor", units=2, epochs=1, size=400, seed=0)
    save_in_the_earlier_layout(run, folder)   # as an earlier `rnnlab train elman:xor --out` left it
    assert not experiments.is_sequence_run(folder) and rnnlab.runs.kind(folder) == "classifier"
    with pytest.raises(checkpoint.RunError, match=r"config\.json: no 'model' entry"):  # the classifier's loader
        rnnlab.load_run(folder)
    (folder / "config.json").unlink()   # the earlier layout alone: the Elman run
    assert experiments.is_sequence_run(folder) and isinstance(rnnlab.load_run(folder), experiments.SequenceRun)


NEW, EARLIER = ("config.json", "model.safetensors"), ("sequence.json", "sequence.safetensors")


@pytest.mark.parametrize("layout", [NEW, EARLIER], ids=["config.json", "sequence.json"])
@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d, c, m: (d / c).write_text('{"kind": "sequence", "config": {}}'), ["{c}", "lackstheentry"]),
        (lambda d, c, m: (d / c).write_text("{oops"), ["{c}"]),
        (lambda d, c, m: (d / m).write_bytes(b"\0" * 4), ["{m}"]),
    ],
    ids=["an entry missing", "not JSON", "weights cut"],
)
def test_a_damaged_elman_run_is_one_line_in_explain_and_inspect(tmp_path, layout, damage, words):
    from typer.testing import CliRunner

    from rnnlab.cli import app
    from rnnlab.teach.elman import experiments

    run = experiments.train_sequence("elman:xor", units=2, epochs=1, size=400, seed=0)
    if layout == NEW:
        folder = experiments.save_sequence(run, tmp_path / "xor")
    else:
        folder = save_in_the_earlier_layout(run, tmp_path / "xor")
    damage(folder, *layout)
    words = [w.format(c=layout[0], m=layout[1]) for w in words]
    for command in (["explain", str(folder)], ["inspect", str(folder), "011"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert all(w in "".join(result.output.split()) for w in words), result.output  # wrapped lines joined


# ------------------------------------------------------------------------- the model: models.SequenceModel


def test_step_loss_is_each_outputs_loss_by_hand():
    import jax.numpy as jnp

    from rnnlab.models import step_loss

    logits = jnp.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    target = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], np.float32)
    sigmoid = 1 / (1 + np.exp(-np.asarray(logits)))
    bce = -(target * np.log(sigmoid) + (1 - target) * np.log(1 - sigmoid)).sum(-1)
    np.testing.assert_allclose(step_loss("sigmoid", logits, jnp.asarray(target)), bce, rtol=1e-6)
    log_softmax = np.asarray(logits) - np.log(np.exp(np.asarray(logits)).sum(-1, keepdims=True))
    np.testing.assert_allclose(step_loss("softmax", logits, jnp.array([0, 1])), -log_softmax[[0, 1], [0, 1]],
                               rtol=1e-6)
    one_hot = np.eye(3, dtype=np.float32)[[0, 1]]
    np.testing.assert_allclose(step_loss("softmax", logits, jnp.asarray(one_hot)), -log_softmax[[0, 1], [0, 1]],
                               rtol=1e-6)
    np.testing.assert_allclose(step_loss("identity", logits, jnp.asarray(target)),
                               ((np.asarray(logits) - target) ** 2).sum(-1), rtol=1e-6)


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_sequence_model_is_its_layer_and_readout_and_continues_a_stream(cell):
    import jax
    import jax.numpy as jnp

    from rnnlab.layers import with_engine
    from rnnlab.models import sequence_model

    model = sequence_model(cell, 3, 5, 4, "sigmoid", key=jax.random.key(1))
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 10, 3)).astype(np.float32))
    logits, a, final = model.run(x)
    layer = model.rnn.layers[0]
    a_layer, _ = layer(x)
    np.testing.assert_allclose(a, a_layer, atol=1e-6)
    W_y, b_y = np.asarray(model.readout.W_y), np.asarray(model.readout.b_y)
    np.testing.assert_allclose(logits, np.asarray(a) @ W_y.T + b_y, atol=1e-5)  # y_t = W_y a_t + b_y, every t
    # a stream in two windows, the second started from the first's state_T, is the stream whole
    first, _, state = model.run(x[:, :6])
    second, _, end = model.run(x[:, 6:], state)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), logits, atol=1e-5)
    for got, want in zip(jax.tree.leaves(end), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # the engine and the scan agree on the model, and one stream (T, k) gives its row of the batch
    np.testing.assert_allclose(with_engine(model, "scan").run(x)[0], logits, atol=1e-5)
    np.testing.assert_allclose(model(x[1]), logits[1], atol=1e-5)
    np.testing.assert_allclose(model.probabilities(logits), 1 / (1 + np.exp(-np.asarray(logits))), rtol=1e-5)


def test_sequence_model_many_to_one_reads_each_sequence_at_its_own_end():
    import jax
    import jax.numpy as jnp

    from rnnlab.models import sequence_model

    x = jnp.asarray(np.random.default_rng(3).standard_normal((3, 7, 2)).astype(np.float32))
    lengths = jnp.array([7, 3, 5])
    for bidirectional in (False, True):
        model = sequence_model("gru", 2, 4, 3, every_step=False, bidirectional=bidirectional, key=jax.random.key(4))
        many = sequence_model("gru", 2, 4, 3, every_step=True, bidirectional=bidirectional, key=jax.random.key(4))
        y = model(x, lengths)
        assert y.shape == (3, 3)
        for b, L in enumerate(np.asarray(lengths)):
            alone = many(x[b, :L])  # (L, q): y_t at every step of the sequence alone
            # one direction: y at t = L; two: the forward a_L and the backward a_1, each having read it all
            want = alone[L - 1] if not bidirectional else model.readout(jnp.concatenate(
                [many.run(x[b, :L])[1][L - 1, :4], many.run(x[b, :L])[1][0, 4:]]))
            np.testing.assert_allclose(y[b], want, atol=1e-5)


def test_truncated_bptt_trains_through_the_layer_as_the_scan_over_each_window():
    """One epoch of `train_sequence` (the windows of B streams as one batch through the layer, the state
    carried from window to window) equals the same epoch written out by hand on `layers.scan`."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from rnnlab.layers import scan
    from rnnlab.models import sequence_model
    from rnnlab.teach.elman import experiments

    data = elman.load("letters", seed=5, size=120)
    run = experiments.train_sequence(data, units=6, epochs=1, streams=4, window=8, lr=1e-2, seed=5)
    model = sequence_model("elman", data.k, 6, data.q, data.output, key=jax.random.key(5))
    cell, readout = model.rnn.layers[0].cell, model.readout
    xs, ys = experiments._windows(data, 4, 8)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    params = (cell, readout)
    opt_state = optimizer.init(eqx.filter(params, eqx.is_inexact_array))
    state = jnp.zeros((4, 6))

    def loss(params, x, y, state):
        cell, readout = params
        a, final = jax.vmap(lambda x_b, s_b: scan(cell, cell.project(x_b), s_b))(x, state)
        bce = optax.sigmoid_binary_cross_entropy(readout(a), y).sum(-1)
        return bce.mean(), final

    for x, y in zip(xs, ys, strict=True):
        (_, state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(params, x, y, state)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(params, eqx.is_inexact_array))
        params = eqx.apply_updates(params, updates)
    np.testing.assert_allclose(run.model.rnn.layers[0].cell.W_a, params[0].W_a, atol=1e-5)
    np.testing.assert_allclose(run.model.readout.W_y, params[1].W_y, atol=1e-5)
