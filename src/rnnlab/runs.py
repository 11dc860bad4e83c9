"""Any run folder, loaded by its kind: config.json's "kind" says which model it holds.

    run = rnnlab.load_run("RUN")     # a classifier's `Run` ("classifier", or no kind: older runs) or
                                     # an Elman experiment's `SequenceRun` ("sequence", or sequence.json)

The loader of readers that take either kind (the server, `rnnlab explain RUN`, `rnnlab inspect RUN`); those that take a
classifier alone (`rnnlab predict`, `rnnlab evaluate`) call `checkpoint.load_run`. Each kind's own loader
checks its files and refuses damage in one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

from rnnlab import checkpoint, inference
from rnnlab.inference import Run
from rnnlab.teach.elman import experiments
from rnnlab.teach.elman.experiments import SequenceRun


def kind(run_dir: str | Path) -> str:
    """The kind of run `run_dir` holds ("classifier" or "sequence"); a folder that holds no run reads as a
    classifier's, whose loader then says what is missing."""
    return experiments.KIND if experiments.is_sequence_run(run_dir) else inference.KIND


def load_run(run_dir: str | Path) -> Run | SequenceRun:
    """The run in `run_dir`, whichever kind it is (`kind`). Raises `checkpoint.RunError` in one line for a
    folder that is no run, or a damaged one."""
    if kind(run_dir) == experiments.KIND:
        return experiments.load_sequence(run_dir)
    return checkpoint.load_run(run_dir)
