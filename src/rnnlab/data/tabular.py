"""CSV, TSV and JSON Lines files with a text column and a label column (names configurable).

One file gives a `train` split, or one split per value of a `split` column (train / val / test; `dev` and
`validation` count as val). Label names are the distinct training labels, sorted (numerically when they
are all integers), unless given; a label in val/test that train never had is an error naming its line.
A label is text or a number; numbers that are whole (`1`, `1.0`, `1e0`) name one class, `1`. An empty,
null, non-finite or structured (list, object) label is refused, naming its line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

from rnnlab.data.dataset import SPLITS, DataError, Dataset, Split, label_names, official_task, read_lines

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
                 "test": "test"}
SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")

Row = tuple[int, str, str, str | None]  # (line, text, label, split)

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
MISSING = ("", "nan", "null")


def _label(value: object, path: Path, line: int) -> str:
    """A label's class name: text stripped; a whole number as its integer (1.0 and 1 are one class)."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise DataError(path, f"the label must be text or a number; got {json.dumps(value)}", line)
    text = str(value).strip()
    if text.lower() in MISSING:
        raise DataError(path, f"a missing label ({text!r})" if text else "an empty label", line)
    if isinstance(value, int | float) or NUMBER.fullmatch(text):
        number = float(value) if isinstance(value, int | float) else float(text)
        if not math.isfinite(number):
            raise DataError(path, f"the label {text} is not a finite number", line)
        if isinstance(value, int):
            return str(value)
        if number.is_integer() and abs(number) < 2**53:
            return str(int(number))
    return text


def _rows_csv(path: Path, text_column: str, label_column: str, delimiter: str) -> list[Row]:
    lines = read_lines(path)  # checks UTF-8 and emptiness, naming the line
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n", newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise DataError(path, "the file is empty", 1)
    header = [h.strip() for h in header]
    for column in (text_column, label_column):
        if column not in header:
            raise DataError(path, f"no column {column!r} in the header (columns: {', '.join(header)}); "
                            "name the right ones with --text-column / --label-column", 1)
    t, lab = header.index(text_column), header.index(label_column)
    s = header.index("split") if "split" in header else None
    rows: list[Row] = []
    end = reader.line_num
    while True:
        try:
            record = next(reader, None)
        except csv.Error as e:
            raise DataError(path, f"not valid CSV ({e})", end + 1) from None
        if record is None:
            break
        n, end = end + 1, reader.line_num          # the record's first line, and its last
        if not record or all(not f.strip() for f in record):
            continue
        if len(record) != len(header):
            if end > n:
                quote = "never closed" if end >= len(lines) else f"closed only on line {end}"
                raise DataError(path, f"a quoted field opens on this line and is {quote}: "
                                f"{len(record)} fields where the header has {len(header)}", n)
            raise DataError(path, f"{len(record)} fields where the header has {len(header)}", n)
        rows.append((n, record[t], _label(record[lab], path, n), None if s is None else record[s].strip()))
    return rows


def _rows_jsonl(path: Path, text_column: str, label_column: str) -> list[Row]:
    rows: list[Row] = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"not valid JSON ({e.msg} at column {e.colno})", n) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object per line; got {type(record).__name__}", n)
        for column in (text_column, label_column):
            if column not in record:
                raise DataError(path, f"no field {column!r} (fields: {', '.join(record)}); name the right "
                                "ones with --text-column / --label-column", n)
        text = record[text_column]
        if not isinstance(text, str):
            raise DataError(path, f"field {text_column!r} must be a string; got {text!r}", n)
        split = record.get("split")
        rows.append((n, text, _label(record[label_column], path, n), None if split is None else str(split)))
    return rows


def read_rows(path: str | Path, text_column: str = "text", label_column: str = "label") -> list[Row]:
    """(line, text, label, split or None) for each record of a CSV/TSV/JSONL file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _rows_jsonl(path, text_column, label_column)
    elif suffix in (".csv", ".tsv"):
        rows = _rows_csv(path, text_column, label_column, "\t" if suffix == ".tsv" else ",")
    else:
        raise DataError(path, f"unknown file type {suffix!r}: use one of {', '.join(SUFFIXES)}")
    if not rows:
        raise DataError(path, "the file has no records")
    return rows


def read_files(
    files: dict[str, Path], text_column: str = "text", label_column: str = "label",
    labels: tuple[str, ...] | None = None, task: str | None = None,
) -> Dataset:
    """A dataset from one file per split ({"train": path, ...}), or one file holding a `split` column."""
    rows: dict[str, list[tuple[Path, Row]]] = {}
    for split, path in files.items():
        for row in read_rows(path, text_column, label_column):
            name = split
            if row[3] is not None and len(files) == 1:
                name = SPLIT_ALIASES.get(row[3].lower(), "")
                if not name:
                    raise DataError(path, f"unknown split {row[3]!r}: use train, val (or dev) or test",
                                    row[0])
            rows.setdefault(name, []).append((path, row))
    if "train" not in rows:
        raise DataError(next(iter(files.values())), "no training records (split 'train')")
    names = labels or label_names([r[2] for _, r in rows["train"]])
    if len(names) < 2:
        raise DataError(files.get("train", next(iter(files.values()))),
                        f"a classification task needs at least 2 labels; the training records have {names}")
    ids = {name: i for i, name in enumerate(names)}
    splits = {}
    for split in SPLITS:
        if split not in rows:
            continue
        for path, (n, _, label, _) in rows[split]:
            if label not in ids:
                raise DataError(path, f"unknown label {label!r} in the {split} split: the labels are "
                                f"{', '.join(names)}", n)
        path = rows[split][0][0]
        splits[split] = Split([r[1] for _, r in rows[split]], [ids[r[2]] for _, r in rows[split]], str(path))
    first = next(iter(files.values()))
    name, note = official_task(task or (first.parent.name if len(files) > 1 else first.stem), names)
    return Dataset(name, names, splits, str(first), notes=[note] if note else [])


def find_split_files(folder: Path) -> dict[str, Path]:
    """{split: file} for a folder of train/val/test files (`dev.csv`, `validation.jsonl` count as val)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(path.stem.lower())
        if split and path.suffix.lower() in SUFFIXES and split not in found:
            found[split] = path
    return found
