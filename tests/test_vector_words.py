"""Pretrained vectors' words that no training text holds (`Config.vector_words`): they enter the vocabulary
with their vectors, no training step changes them, so training leaves their rows out and the run appends
them (`train.Prepared.complete`)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rnnlab import load_run, train
from rnnlab.data import subwords
from rnnlab.data.embeddings import read_text_vectors
from rnnlab.train import Config, fit

sys.path.insert(0, str(Path(__file__).parent))
from test_train import SMALL, _vectors, toy_dataset

BASE = {**SMALL, "epochs": 2, "subwords": 40, "vector_words": 0}


def _words_file(tmp_path: Path) -> Path:
    """The toy words' vectors, then five words that no toy text holds."""
    path = _vectors(tmp_path)
    rng = np.random.default_rng(5)
    extra = "".join(f"unseen{i} {' '.join(f'{v:.4f}' for v in rng.normal(size=6))}\n" for i in range(5))
    path.write_text(path.read_text() + extra)
    return path


def _config(tmp_path: Path, **change) -> Config:
    return Config(**{**BASE, "embeddings": str(_words_file(tmp_path)), **change})


def test_prepare_leaves_the_words_no_training_text_holds_out_of_training(tmp_path):
    config = _config(tmp_path, vector_words=30)
    own = train.prepare(replace(config, vector_words=0), toy_dataset())
    prep = train.prepare(config, toy_dataset())
    assert prep.trained == len(own.vocab) < len(prep.vocab)
    assert prep.vocab.tokens[: prep.trained] == own.vocab.tokens
    assert prep.trained_config.vocab_size == prep.trained and prep.model_config.vocab_size == len(prep.vocab)
    np.testing.assert_array_equal(prep.extra, prep.E[prep.trained:])
    assert own.extra is None and own.trained == len(own.vocab)


def test_words_no_training_text_holds_change_nothing_in_training(tmp_path):
    """The same data and seed with and without vector words: every trained weight and every training loss
    the same to the bit; the appended rows are the file's vectors, and their n-grams' rows the table's."""
    without = fit(_config(tmp_path), toy_dataset(), progress=False)
    with_words = fit(_config(tmp_path, vector_words=30), toy_dataset(), progress=False)
    V = len(without.vocab)
    assert with_words.vocab.tokens[:V] == without.vocab.tokens and len(with_words.vocab) > V
    assert [h["train_loss"] for h in with_words.history] == [h["train_loss"] for h in without.history]
    a, b = without.model, with_words.model
    np.testing.assert_array_equal(np.asarray(b.E)[:V], np.asarray(a.E))
    np.testing.assert_array_equal(np.asarray(b.H), np.asarray(a.H))
    np.testing.assert_array_equal(np.asarray(b.head.W_y), np.asarray(a.head.W_y))
    vectors = read_text_vectors(_words_file(tmp_path))
    for i, word in enumerate(with_words.vocab.tokens[V:], start=V):
        np.testing.assert_array_equal(np.asarray(b.E)[i], vectors.get(word))
    np.testing.assert_array_equal(np.asarray(b.grams), subwords.table(with_words.vocab.tokens, 40))
    assert b.config.vocab_size == len(with_words.vocab)


def test_a_run_with_vector_words_saves_every_row_and_resumes_exactly(tmp_path):
    config = _config(tmp_path, vector_words=30, epochs=3)
    whole = fit(config, toy_dataset(), progress=False)
    out = tmp_path / "run"

    def interrupt(epoch, *_):  # as a kill after the first epoch's checkpoint
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, toy_dataset(), out, progress=False, callback=interrupt)
    resumed = fit(config, toy_dataset(), out, progress=False, resume=True)
    for x, y in zip(np.asarray(resumed.model.E), np.asarray(whole.model.E), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert [h["val_score"] for h in resumed.history] == [h["val_score"] for h in whole.history]
    run = load_run(out)
    assert np.asarray(run.model.E).shape == (len(whole.vocab), 6)
    texts = toy_dataset()["test"].texts
    np.testing.assert_allclose(run.predict_proba(texts), load_run(out).predict_proba(texts))
    np.testing.assert_array_equal(np.asarray(run.model.E), np.asarray(resumed.model.E))


def test_training_tokens_left_out_of_the_vocabulary_stay_unk_and_every_training_id_is_trained(tmp_path):
    """min_freq and max_vocab cut the training vocabulary; a cut training word stays <unk> even where the
    pretrained vectors hold it, so no training text reads a row that training leaves out."""
    for cut in ({"min_freq": 40}, {"max_vocab": 12}):
        prep = train.prepare(_config(tmp_path, vector_words=30, **cut), toy_dataset())
        ids, _ = prep.train
        assert ids.max() < prep.trained < len(prep.vocab)
        held = {t for text in toy_dataset()["train"].texts for t in text.split()}
        assert not held & set(prep.vocab.tokens[prep.trained:])
        assert set(prep.vocab.tokens[prep.trained:]) == {f"unseen{i}" for i in range(5)}


def test_a_run_that_trained_every_row_resumes_training_every_row(tmp_path, monkeypatch):
    """A state whose E holds every row of the vocabulary (as runs made before rows were left out) resumes
    as it began: every row trained."""
    config = _config(tmp_path, vector_words=30, epochs=3)
    with monkeypatch.context() as m:  # every row trained, as such a run was
        built = train.vocabulary
        m.setattr(train, "vocabulary", lambda config, tokenized: (*built(config, tokenized)[:2], 10**9))
        whole = fit(config, toy_dataset(), progress=False)
        out = tmp_path / "old"

        def interrupt(epoch, *_):
            if epoch == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            fit(config, toy_dataset(), out, progress=False, callback=interrupt)
    assert whole.trained_rows == len(whole.vocab)
    resumed = fit(config, toy_dataset(), out, progress=False, resume=True)
    assert resumed.trained_rows == len(resumed.vocab)
    np.testing.assert_allclose(np.asarray(resumed.model.E), np.asarray(whole.model.E), rtol=0, atol=1e-6)
    assert [h["val_score"] for h in resumed.history] == [h["val_score"] for h in whole.history]


def test_a_run_with_frozen_vectors_resumes_with_them(tmp_path):
    """A frozen E is no part of the training state: a resume reads the vectors again, and ends as the run
    trained without interruption."""
    for words in (0, 30):
        config = _config(tmp_path, vector_words=words, epochs=3, freeze_embeddings=True)
        whole = fit(config, toy_dataset(), progress=False)
        out = tmp_path / f"frozen{words}"

        def interrupt(epoch, *_):
            if epoch == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            fit(config, toy_dataset(), out, progress=False, callback=interrupt)
        resumed = fit(config, toy_dataset(), out, progress=False, resume=True)
        np.testing.assert_array_equal(np.asarray(resumed.model.E), np.asarray(whole.model.E))
        assert [h["val_score"] for h in resumed.history] == [h["val_score"] for h in whole.history]
