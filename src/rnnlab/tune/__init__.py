"""Sweeps over the number of units p (and other choices), shared by any number of workers.

    study.py    the sweep on Optuna's storage: `Space`, `open_study`, `run_worker`, `trial_rows`, `best`
    task.py     what a trial runs on labelled text: `TrainTask` (`rnnlab.train.fit` with the trial's values)
    report.py   the results for a person: the Rich table, the CSV of every trial, the plot of score against p

The names of `study` are re-exported here (`rnnlab.tune.open_study`, ...); `task` and `report` are imported
where they are used.
"""

from rnnlab.tune.study import (
    LOG_RANGES,
    PARAMS,
    REPEAT,
    TEST_ROLE,
    Events,
    Silent,
    Space,
    SweepError,
    Task,
    TrialLog,
    best,
    groups,
    load_study,
    open_study,
    postgres_driver,
    progress,
    row,
    run_worker,
    storage,
    sweep_space,
    trial_rows,
    where,
)

__all__ = [
    "LOG_RANGES", "PARAMS", "REPEAT", "TEST_ROLE", "Events", "Silent", "Space", "SweepError", "Task", "TrialLog",
    "best", "groups", "load_study", "open_study", "postgres_driver", "progress", "row", "run_worker", "storage",
    "sweep_space", "trial_rows", "where",
]
