"""TweetEval: the reader for its folder format, and a downloader for its public tasks.

A task folder holds `{train,val,test}_text.txt` (one tweet a line), `{split}_labels.txt` (one integer a
line, the same number of lines) and `mapping.txt` (`id<TAB>name` a line; the stance tasks share one in
their parent folder). `fetch("emotion")` downloads a task into the user's cache directory
(`platformdirs.user_cache_dir("rnnlab")/tweeteval`, or `$RNNLAB_CACHE_DIR/tweeteval`), checking each file's
SHA-256, from `$RNNLAB_TWEETEVAL_URL` when set, else the benchmark's public GitHub repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from rnnlab.data.dataset import SPLITS, DataError, Dataset, Split, label_names, official_task, read_lines

BASE_URL = "https://raw.githubusercontent.com/cardiffnlp/tweeteval/main/datasets"
URL_ENV = "RNNLAB_TWEETEVAL_URL"
CACHE_ENV = "RNNLAB_CACHE_DIR"

STANCE_TARGETS = ("abortion", "atheism", "climate", "feminist", "hillary")
TASKS = ("emoji", "emotion", "hate", "irony", "offensive", "sentiment", "stance",
         *(f"stance/{t}" for t in STANCE_TARGETS))
FILES = tuple(f"{s}_{kind}.txt" for s in SPLITS for kind in ("text", "labels"))

# SHA-256 of the published files. Files without an entry are pinned in the cache's manifest on first
# download and checked against it from then on.
CHECKSUMS = {
    "emotion/mapping.txt": "656dea85d149716af96206ca19bec0d94e9dc6de3f5079f5c7c2a241ec76cadb",
    "emotion/test_labels.txt": "245072348c711961785be6d395997f97cf7fcda3effeae7805664171dc75f913",
    "emotion/test_text.txt": "7e1070f5d3e3fcece5bc73680bff9981e90d8f7b2f1009bfe7a01d059d1c6091",
    "emotion/train_labels.txt": "987e767d8679e18abdf7de37a6d2bcd0a40a296ddd704e8d515cf0e3033c8d9c",
    "emotion/train_text.txt": "2c62f67aeb3eac1aea0e5a9c3d0f4bc337992581f3f858061786a1fb4d79d95e",
    "emotion/val_labels.txt": "313730630160b7e0a6b4235b800c76683f4aeeb72d094eb69646630cd5cfe338",
    "emotion/val_text.txt": "e2e30c86b8cbb97944d6543aedc06eace3bb275cb2f381aba787b838b4f23ca5",
    "hate/mapping.txt": "3fc75504ffae64ddc82e13afb5790af7798cd3167d7d35790abe78b39b991896",
    "hate/test_labels.txt": "c14adca6b3627616a835c5ccea8a1cceb0235cd79417257f093eb0e16a69c62f",
    "hate/test_text.txt": "bc4762876a8dd8baa55c3cd7b03108e3231a5d691e80b8b1ef97c5be31b9da9a",
    "hate/train_labels.txt": "4e8fde025a453a25c94632794254131dedeac4e57228ad64157c41571cc88f71",
    "hate/train_text.txt": "6572bb3a42143128a5dfa99af8debeb0668e637c34b2d1e3140dac47316fe2c2",
    "hate/val_labels.txt": "5092badf1a0e70036ea6264bcd0b78afc07d0f4a512fa6af34c2c4973600656b",
    "hate/val_text.txt": "1ff78b1ed4c5ce43284b9eba32eb7d60c6d45d0d1b3b4d6df456ae01640764f1",
    "irony/mapping.txt": "70e09046e181179b9870a2f59a3263bbb28c787831779e4ce4a18373d054296b",
    "irony/test_labels.txt": "08e2095e1725e74907a380614c220204e356bb46e3e8c93deb74e83e5b15ab38",
    "irony/test_text.txt": "53103da934a7308eee82f05f2a9781a8ea3e88604fdc1e02d3101108505c64be",
    "irony/train_labels.txt": "fc69e6106c0f1f433a91536e08f83c71a391d7b219f7684d42f243a8089af77d",
    "irony/train_text.txt": "a888125a44f7dfaa25b026318748d0e62cc9a300d20f66eafd62011a19eaea23",
    "irony/val_labels.txt": "ccf429f63b4e8d0e7f425ca09445f7c31f7cea8a1b7c283b015b117c4002fd07",
    "irony/val_text.txt": "8806cf3793e300a485cfae34892fc3a0a2f9a183deb06c750c6531515c83051e",
}


# -- reading ---------------------------------------------------------------------------------------------

def read_mapping(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names, descriptions) from `mapping.txt`: `id<TAB>name` lines, ids 0..C-1 in any order. Further
    tab-separated columns (TweetEval emoji's `0<TAB>❤<TAB>_red_heart_`) are the label's description."""
    names: dict[int, tuple[str, str]] = {}
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split(None, 1)
        if len(parts) < 2 or not parts[0].strip().isdigit() or not parts[1].strip():
            raise DataError(path, f"expected 'id<TAB>name' (then any description); got {line!r}", n)
        i = int(parts[0])
        if i in names:
            raise DataError(path, f"label id {i} given twice", n)
        names[i] = parts[1].strip(), " ".join(p.strip() for p in parts[2:] if p.strip())
    if sorted(names) != list(range(len(names))):
        raise DataError(path, f"label ids must be 0..{len(names) - 1}; got {sorted(names)}")
    if len(names) < 2:
        raise DataError(path, f"a classification task needs at least 2 labels; got {len(names)}")
    descriptions = tuple(names[i][1] for i in range(len(names)))
    return tuple(names[i][0] for i in range(len(names))), descriptions if any(descriptions) else ()


def _read_pair(folder: Path, split: str) -> tuple[list[str], list[str], Path, Path]:
    """The texts and raw label values of one split, line i of one matching line i of the other."""
    text_path, label_path = folder / f"{split}_text.txt", folder / f"{split}_labels.txt"
    texts = read_lines(text_path)
    raw = read_lines(label_path)
    if len(texts) != len(raw):
        raise DataError(
            label_path, f"{len(raw)} labels but {text_path.name} has {len(texts)} lines: line i of each "
            f"must belong to the same tweet", min(len(texts), len(raw)) + 1)
    return texts, [v.strip() for v in raw], text_path, label_path


def read_split(folder: Path, split: str, labels: tuple[str, ...], by_name: bool = False) -> Split:
    """One split: `{split}_text.txt` and `{split}_labels.txt`. The label values are ids into `labels`
    (mapping.txt's), or with `by_name` the names themselves (a folder without mapping.txt)."""
    texts, raw, text_path, label_path = _read_pair(folder, split)
    ids = []
    for n, v in enumerate(raw, start=1):
        if by_name:
            if v not in labels:
                what = "an empty label" if not v else f"unknown label {v!r}"
                raise DataError(label_path, f"{what}: train's labels are {', '.join(labels)}", n)
            ids.append(labels.index(v))
            continue
        if not v.isdigit() or int(v) >= len(labels):
            known = ", ".join(f"{i} ({name})" for i, name in enumerate(labels))
            raise DataError(label_path, f"unknown label {v!r}: mapping.txt defines {known}", n)
        ids.append(int(v))
    return Split(texts, ids, str(text_path))


def read_folder(folder: str | Path) -> Dataset:
    """A TweetEval-format task folder. train is required; val and test are read when present. Without a
    mapping.txt (UMSAB's format) the labels are named by their own values, integers in numeric order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder")
    mapping = folder / "mapping.txt"
    if not mapping.is_file() and (folder.parent / "mapping.txt").is_file():
        mapping = folder.parent / "mapping.txt"  # stance: one mapping for all targets
    if not (folder / "train_text.txt").is_file():
        raise DataError(folder / "train_text.txt", "no such file: a task folder needs a train split")
    notes: list[str] = []
    descriptions: tuple[str, ...] = ()
    by_name = not mapping.is_file()
    if by_name:
        values = _read_pair(folder, "train")[1]
        if "" in values:
            raise DataError(folder / "train_labels.txt", "an empty label", values.index("") + 1)
        labels = label_names(values)
        notes.append(f"{folder}: no mapping.txt, so the labels are named by their own values: {', '.join(labels)}")
    else:
        labels, descriptions = read_mapping(mapping)
    splits = {s: read_split(folder, s, labels, by_name) for s in SPLITS if (folder / f"{s}_text.txt").is_file()}
    seen = np.unique(splits["train"].labels)
    if len(seen) < 2:
        raise DataError(folder / "train_labels.txt", f"every training text has the label {labels[seen[0]]!r}: "
                        "a classifier needs at least 2 labels in train")
    task, note = official_task("stance" if folder.parent.name == "stance" else folder.name, labels)
    notes += [note] if note else []
    return Dataset(task, labels, splits, str(folder), descriptions, notes)


# -- downloading -----------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where downloaded tasks live: $RNNLAB_CACHE_DIR/tweeteval, else the platform's user cache."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("rnnlab")
    return Path(root) / "tweeteval"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, progress, task_id) -> None:
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:
            size = response.headers.get("Content-Length")
            progress.update(task_id, total=int(size) if size else None, completed=0)
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                progress.advance(task_id, len(chunk))
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(f"could not download {url}: {getattr(e, 'reason', e)}") from None
    os.replace(tmp, dest)


def fetch(task: str, *, progress: bool = True, base_url: str | None = None, notes: list[str] | None = None) -> Path:
    """The folder of a TweetEval task, downloaded into the cache on first use (SHA-256 checked).

    task: one of TASKS (`"emotion"`, `"stance/abortion"`, ...). base_url: else $RNNLAB_TWEETEVAL_URL, else
    the public repository. notes: where to say that files with no pinned SHA-256 were trusted as first
    downloaded (their hashes recorded in the manifest and checked from then on).
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    task = task.strip("/")
    if task not in TASKS:
        raise ValueError(f"unknown TweetEval task {task!r}: use one of {', '.join(TASKS)}")
    if task == "stance":
        raise ValueError("stance has one task per target: use one of "
                         + ", ".join(f"tweeteval:stance/{t}" for t in STANCE_TARGETS))
    base = (base_url or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    root = cache_dir()
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    names = [f"{task}/{f}" for f in FILES]
    names.append("stance/mapping.txt" if task.startswith("stance/") else f"{task}/mapping.txt")
    trusted = []
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  disable=not progress, transient=True) as bar:
        for name in names:
            dest = root / name
            expected = CHECKSUMS.get(name) or manifest.get(name)
            if dest.is_file() and (expected is None or _sha256(dest) == expected):
                if expected is None:
                    manifest[name] = _sha256(dest)
                continue
            _download(f"{base}/{name}", dest, bar, bar.add_task(f"tweeteval {name}", total=None))
            digest = _sha256(dest)
            if expected is not None and digest != expected:
                dest.unlink()
                raise DataError(f"{base}/{name}", f"SHA-256 {digest} does not match the expected {expected}; "
                                "the download was corrupted or the file changed upstream")
            if expected is None:
                trusted.append(name)
            manifest[name] = digest
    tmp = manifest_path.with_name("manifest.json.part")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    if trusted:
        message = (f"warning: tweeteval:{task}: {len(trusted)} file(s) have no pinned SHA-256 and were trusted as "
                   f"downloaded from {base}; their hashes are now in {manifest_path} and checked from then on")
        if notes is None:
            print(message, file=sys.stderr)
        else:
            notes.append(message)
    return folder


def load(task: str, *, progress: bool = True) -> Dataset:
    """A TweetEval task by name, downloaded on first use."""
    notes: list[str] = []
    dataset = read_folder(fetch(task, progress=progress, notes=notes))
    dataset.notes[:0] = notes
    return dataset
