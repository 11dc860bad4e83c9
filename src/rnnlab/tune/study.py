"""Sweeps over the number of units p (and other choices) as one Optuna study that any number of workers share.

    space = Space.parse(units="8,16,32", cell="gru,lstm")          # lists only: a grid of 6 trials
    study = open_study("sqlite:///runs/tune/study.db", "emotion", space, settings={"epochs": 5})
    run_worker(study, task)                                        # run trials until none are left
    rows, test = trial_rows(study)                                 # one row per finished trial, the test

How the work is shared. The worker that creates the study puts every trial in its queue at once (a grid point,
or an empty slot that the sampler fills for a search over ranges) and one last trial, the test: the best
configuration retrained and scored once on the test split, after every other trial has finished. Workers take
queued trials with an atomic state change in the storage (SQLite on one machine, PostgreSQL on many), so each
trial runs exactly once however many workers there are. A running trial writes a heartbeat; one whose worker
died (killed, machine lost) goes stale and is queued again, which is how an interrupted sweep resumes without
losing its finished trials.

The task is anything with `metric`, `validate(config, log) -> score` and `test(config, log) -> metrics`
(`rnnlab.tune.task.TrainTask` trains the tweet classifier); higher scores are better.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import os
import random
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import optuna
import sqlalchemy.exc
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

try:  # Optuna >= 4.9; before, the same callback under its older name and keyword
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    STALE_CALLBACK = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback as Retry

    STALE_CALLBACK = "failed_trial_callback"

# What can be swept, with the type of its values; lr and dropout also take ranges ("1e-4..1e-2").
# `seed` repeats every configuration with each seed: configurations are then compared by their mean score.
PARAMS: dict[str, type] = {
    "units": int, "cell": str, "layers": int, "k": int, "dropout": float, "lr": float, "maxlen": int,
    "seed": int,
}
REPEAT = "seed"
LOG_RANGES = {"lr"}          # searched on a log scale
TEST_ROLE = "test"           # user attr `role` of the study's last trial: the best config scored on test


class SweepError(ValueError):
    """A sweep that cannot run as asked; the message says what to change."""


# ----------------------------------------------------------------------------------------------------------
# The search space


@dataclass(frozen=True)
class Space:
    """Values to try: `choices` (lists, a grid) and `ranges` (lo, hi), which make it a sampled search."""

    choices: dict[str, tuple[Any, ...]]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, **options: str | None) -> Space:
        """From command-line text: units="8,16,32", cell="gru,lstm", lr="1e-4..1e-2"; None leaves it out."""
        choices: dict[str, tuple[Any, ...]] = {}
        ranges: dict[str, tuple[float, float]] = {}
        for name, text in options.items():
            if text is None or str(text).strip() == "":
                continue
            if name not in PARAMS:
                raise SweepError(f"cannot sweep {name!r}: the swept options are {', '.join(PARAMS)}")
            kind = PARAMS[name]
            text = str(text).strip()
            if ".." in text:
                if kind is not float:
                    raise SweepError(f"--{name} takes a list ({name}=8,16,32), not a range: got {text!r}")
                lo, hi = (_number(float, part, name) for part in text.split("..", 1))
                if not lo < hi or (name in LOG_RANGES and lo <= 0):
                    raise SweepError(f"--{name} {text!r}: a range needs lo < hi" +
                                     (" and lo > 0 (log scale)" if name in LOG_RANGES else ""))
                ranges[name] = (lo, hi)
                continue
            values = [_number(kind, part.strip(), name) for part in text.split(",") if part.strip()]
            if not values:
                raise SweepError(f"--{name} {text!r} holds no values")
            if len(set(values)) != len(values):
                raise SweepError(f"--{name} {text!r} repeats a value")
            if kind is int and name != REPEAT and min(values) < 1:
                raise SweepError(f"--{name} {text!r}: every value must be at least 1")
            choices[name] = tuple(values)
        if "units" not in choices:
            raise SweepError("a sweep needs --units, e.g. --units 8,16,32,64,128")
        if REPEAT in choices:
            if ranges:
                raise SweepError("seeds repeat the configurations of a grid; a search over ranges (here "
                                 f"{', '.join(ranges)}) samples each configuration once: use a single --seed")
            choices[REPEAT] = choices.pop(REPEAT)          # last: a configuration's seeds run one after another
        return cls(choices, ranges)

    @property
    def is_grid(self) -> bool:
        return not self.ranges

    @property
    def names(self) -> list[str]:
        return [*self.choices, *self.ranges]

    @property
    def config_names(self) -> list[str]:
        """The names that make a configuration: all but the seed."""
        return [n for n in self.names if n != REPEAT]

    @property
    def varied(self) -> list[str]:
        """The names with more than one value: what tells the trials apart."""
        return [n for n in self.names if n in self.ranges or len(self.choices[n]) > 1]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the choices, units varying slowest."""
        names = list(self.choices)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.choices.values())]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's configuration: its queued grid point, or values the sampler picks."""
        config: dict[str, Any] = {}
        for name, values in self.choices.items():
            config[name] = trial.suggest_categorical(name, list(values))
        for name, (lo, hi) in self.ranges.items():
            config[name] = trial.suggest_float(name, lo, hi, log=name in LOG_RANGES)
        return config

    def to_json(self) -> dict[str, Any]:
        return {"choices": {k: list(v) for k, v in self.choices.items()},
                "ranges": {k: list(v) for k, v in self.ranges.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Space:
        return cls({k: tuple(v) for k, v in data["choices"].items()},
                   {k: (float(v[0]), float(v[1])) for k, v in data.get("ranges", {}).items()})


def _number(kind: type, text: str, name: str) -> Any:
    try:
        return kind(text) if kind is not str else text.lower()
    except ValueError:
        raise SweepError(f"--{name}: {text!r} is not {'an integer' if kind is int else 'a number'}") from None


# ----------------------------------------------------------------------------------------------------------
# The task a trial runs, and what a trial can tell the study while it runs


class TrialLog:
    """Handed to the task: `report(epoch, score)` after each epoch (raises `optuna.TrialPruned` when the
    pruner gives up on the trial), `note(**attrs)` to record facts such as the parameter count."""

    def __init__(self, trial: optuna.Trial | None, on_epoch: Callable[[int, float], None] | None = None,
                 prune: bool = True):
        self.trial = trial
        self.on_epoch = on_epoch
        self.prune = prune
        self.scores: dict[int, float] = {}
        self.notes: dict[str, Any] = {}

    def report(self, epoch: int, score: float) -> None:
        self.scores[epoch] = float(score)
        if self.on_epoch is not None:
            self.on_epoch(epoch, float(score))
        if self.trial is not None and self.prune and math.isfinite(score):
            self.trial.report(float(score), epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"validation score {score:.4f} after epoch {epoch}")

    def note(self, **attrs: Any) -> None:
        self.notes.update(attrs)
        if self.trial is not None:
            for key, value in attrs.items():
                self.trial.set_user_attr(key, value)


@runtime_checkable
class Task(Protocol):
    """What a sweep runs. `metric` names the validation score (higher is better)."""

    metric: str

    def validate(self, config: dict[str, Any], log: TrialLog) -> float:
        """Train with `config` (seeds fixed) and return the best validation score."""
        ...

    def test(self, config: dict[str, Any], log: TrialLog) -> dict[str, float]:
        """Retrain with `config` and score it once on the test split: {"val": ..., "test": ..., ...}."""
        ...


@runtime_checkable
class Events(Protocol):
    """What a worker tells its display (`Silent` tells nobody)."""

    def trial_started(self, number: int, config: dict[str, Any], role: str) -> None: ...
    def epoch(self, number: int, epoch: int, score: float) -> None: ...
    def trial_finished(self, row: dict[str, Any]) -> None: ...
    def waiting(self, running: int) -> None: ...


class Silent:
    """Events that go nowhere."""

    def trial_started(self, number: int, config: dict[str, Any], role: str) -> None: ...
    def epoch(self, number: int, epoch: int, score: float) -> None: ...
    def trial_finished(self, row: dict[str, Any]) -> None: ...
    def waiting(self, running: int) -> None: ...


# ----------------------------------------------------------------------------------------------------------
# Storage and study


def storage(url: str, heartbeat: int = 10) -> RDBStorage:
    """Optuna's RDB storage at `url` (sqlite:///path or postgresql://...), with heartbeats every `heartbeat`
    seconds; a trial silent for 3 heartbeats is stale and is queued again (up to 3 times). A URL that names no
    database, or a server that cannot be reached, is a SweepError in one line (the password left out)."""
    engine_kwargs: dict[str, Any] = {}
    shown = where(url)
    sqlite_ = url.startswith("sqlite:///")
    if sqlite_:
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SweepError(f"--storage {shown}: cannot make its folder ({e.strerror})") from None
        engine_kwargs = {"connect_args": {"timeout": 120}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
        url = postgres_driver(url)
    elif "://" not in url:
        raise SweepError(f"--storage {shown}: not a database URL; use sqlite:///PATH or "
                         "postgresql://USER:PASS@HOST:PORT/DB")
    attempt = 0
    while True:
        try:
            with _quiet():
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                  grace_period=3 * heartbeat, **{STALE_CALLBACK: Retry(max_retry=3)})
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            # Workers starting together on an empty database race to create its tables; the loser finds
            # them made on its next try (SQLite says "table ... already exists" or "database is locked").
            # A server that cannot be reached is not a race: said at once.
            attempt += 1
            if isinstance(e, sqlalchemy.exc.OperationalError) and not sqlite_:
                raise SweepError(f"--storage {shown}: cannot reach the database ({_first_line(e)})") from None
            if attempt == 8:
                raise SweepError(f"--storage {shown}: {_first_line(e)}") from None
            time.sleep(0.2 + random.random() * attempt * 0.3)
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as e:
            raise SweepError(f"--storage {shown}: not a database URL SQLAlchemy can open ({_first_line(e)}); "
                             "use sqlite:///PATH or postgresql://USER:PASS@HOST:PORT/DB") from None
        except ModuleNotFoundError as e:
            raise SweepError(f"--storage {shown}: its driver is not installed ({e.name}): for PostgreSQL, "
                             "`pip install psycopg2-binary`") from None


def where(url: str) -> str:
    """A storage URL as it may be shown: without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def postgres_driver(url: str) -> str:
    """postgresql://... with the driver that is installed named: SQLAlchemy's default (psycopg 3) when it
    is there, else psycopg2 (`pip install psycopg2-binary`)."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def open_study(
    storage_: str | RDBStorage, name: str, space: Space, *, settings: dict[str, Any] | None = None,
    trials: int | None = None, test: bool = True, seed: int = 0,
    pruner: optuna.pruners.BasePruner | None = None, wait_s: float = 30.0,
) -> optuna.Study:
    """Create the study `name` with its queue of trials, or join it if it exists with the same sweep.

    `settings` are the fixed choices every trial shares (epochs, seed, data): joining with other values is
    an error, since the trials would not be comparable. `trials` caps the number of trials (a seeded random
    subset of a grid; default the whole grid, or 20 for a search over ranges).
    """
    db = storage(storage_) if isinstance(storage_, str) else storage_
    sweep = {"space": space.to_json(), "settings": settings or {}, "test": test}
    sampler = optuna.samplers.RandomSampler(seed) if space.is_grid else optuna.samplers.TPESampler(seed=seed)
    pruner = pruner if pruner is not None else optuna.pruners.NopPruner()
    with _quiet():
        try:
            study = optuna.create_study(storage=db, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner)
        except DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=db, sampler=sampler, pruner=pruner)
            _join(study, sweep, wait_s)
            return study
    study.set_user_attr("sweep", sweep)
    for config in _queue(space, trials, seed):
        study.enqueue_trial(config, user_attrs={"role": "trial"})
    if test:
        study.enqueue_trial({}, user_attrs={"role": TEST_ROLE})
    study.set_user_attr("ready", True)
    return study


def _queue(space: Space, trials: int | None, seed: int) -> list[dict[str, Any]]:
    if not space.is_grid:
        return [{} for _ in range(trials or 20)]
    grid = space.grid()
    seeds = len(space.choices.get(REPEAT, (None,)))        # a configuration's seeds are kept together
    configs = len(grid) // seeds
    if trials is not None and trials < len(grid):
        keep = sorted(random.Random(seed).sample(range(configs), max(1, trials // seeds)))
        grid = [grid[i * seeds + j] for i in keep for j in range(seeds)]
    return grid


def _join(study: optuna.Study, sweep: dict[str, Any], wait_s: float) -> None:
    """Wait until the creator has queued every trial, then check that this worker asks for the same sweep."""
    deadline = time.monotonic() + wait_s
    while not study.user_attrs.get("ready"):
        if time.monotonic() > deadline:
            raise SweepError(f"study {study.study_name!r} exists but its trials were never queued (its "
                             "creator stopped while creating it): delete it or choose another --study name")
        time.sleep(0.5)
    stored, asked = _flat(study.user_attrs["sweep"]), _flat(json.loads(json.dumps(sweep)))
    differ = [k for k in {**stored, **asked} if stored.get(k) != asked.get(k)]
    if differ:
        what = "; ".join(f"{k}: {stored.get(k, '(not set)')} in the study, {asked.get(k, '(not set)')} here"
                         for k in differ)
        raise SweepError(f"study {study.study_name!r} holds another sweep ({what}). Run with the same options "
                         "to join it, or choose another --study name")


def _flat(sweep: dict[str, Any]) -> dict[str, str]:
    """A sweep as name -> value text: the swept lists and ranges, the fixed settings, test or not."""
    space = Space.from_json(sweep["space"])
    flat = {k: ",".join(map(str, v)) for k, v in space.choices.items()}
    flat |= {k: f"{lo:g}..{hi:g}" for k, (lo, hi) in space.ranges.items()}
    flat |= {k: str(v) for k, v in sweep["settings"].items()}
    flat["test"] = str(sweep.get("test", True))
    return flat


def load_study(storage_: str | RDBStorage, name: str) -> optuna.Study:
    """An existing study, as it is (to report on it); SweepError when there is none by that name."""
    db = storage(storage_) if isinstance(storage_, str) else storage_
    try:
        with _quiet():
            study = optuna.load_study(study_name=name, storage=db)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(db)) or "none"
        raise SweepError(f"no study named {name!r} in this storage (it holds: {names})") from None
    if "sweep" not in study.user_attrs:
        raise SweepError(f"study {name!r} was not made by `rnnlab tune`")
    return study


def sweep_space(study: optuna.Study) -> Space:
    return Space.from_json(study.user_attrs["sweep"]["space"])


# ----------------------------------------------------------------------------------------------------------
# Workers


def run_worker(
    study: optuna.Study, task: Task, *, events: Events | None = None, poll_s: float = 1.0,
    max_trials: int | None = None, wait_s: float | None = None,
) -> int:
    """Run queued trials until the study has none left, then return how many this worker ran.

    With nothing queued but trials running elsewhere, the worker waits for them (a dead worker's trial
    goes stale and is queued again), at most `wait_s` seconds at a time when given. The test trial runs
    last, after every other trial has finished."""
    events = events if events is not None else Silent()
    space = sweep_space(study)
    ran, idle_since = 0, None
    while max_trials is None or ran < max_trials:
        with _quiet():
            optuna.storages.fail_stale_trials(study)      # queues again the trials of workers that died
        trial, running = _take(study)
        if trial is None:
            idle_since = idle_since or time.monotonic()
            if running == 0 or (wait_s is not None and time.monotonic() - idle_since > wait_s):
                break
            events.waiting(running)
            time.sleep(poll_s)
            continue
        idle_since = None
        _run(study, trial, task, space, events)
        ran += 1
    return ran


def _storage_of(study: optuna.Study) -> Any:
    """The storage behind a study (Optuna has no public accessor for it)."""
    return study._storage


def _take(study: optuna.Study) -> tuple[optuna.Trial | None, int]:
    """Atomically move one queued trial to RUNNING; the test trial only once nothing else is queued or
    running. Returns (trial or None, the number of trials running elsewhere)."""
    db = _storage_of(study)
    study_id = db.get_study_id_from_name(study.study_name)
    trials = db.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    others = [t for t in trials if t.user_attrs.get("role") != TEST_ROLE]
    candidates = [t for t in waiting if t.user_attrs.get("role") != TEST_ROLE] or ([] if others else waiting)
    for frozen in candidates:
        trial_id = db.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if db.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                _beat(db, trial_id)               # at once: a trial with no heartbeat never goes stale
                with _quiet():
                    return optuna.Trial(study, trial_id), running
        except UpdateFinishedTrialError:
            continue
    return None, running + len(waiting)      # queued trials another worker just took are running now


def _run(study: optuna.Study, trial: optuna.Trial, task: Task, space: Space, events: Events) -> None:
    role = trial.user_attrs.get("role", "trial")
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    start = time.perf_counter()
    with _heartbeat(study, trial):
        try:
            if role == TEST_ROLE:
                config = _best_config(study)
                trial.set_user_attr("config", config)
            else:
                config = space.suggest(trial)
            events.trial_started(trial.number, config, role)
            log = TrialLog(trial, lambda e, s: events.epoch(trial.number, e, s), prune=role != TEST_ROLE)
            if role == TEST_ROLE:
                metrics = task.test(config, log)
                trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
                value, state = float(metrics.get("val", math.nan)), TrialState.COMPLETE
            else:
                value, state = float(task.validate(config, log)), TrialState.COMPLETE
            if not math.isfinite(value):
                raise SweepError(f"the task returned a score of {value}")
        except optuna.TrialPruned:
            value, state = None, TrialState.PRUNED
        except (KeyboardInterrupt, SystemExit):
            trial.set_user_attr("seconds", time.perf_counter() - start)
            with _quiet():
                frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                Retry()(study, frozen)                             # queued again for the next worker
            raise
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            value, state = None, TrialState.FAIL
        trial.set_user_attr("seconds", time.perf_counter() - start)
    with _quiet():
        frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    events.trial_finished(row(frozen, space))


def _best_config(study: optuna.Study) -> dict[str, Any]:
    """The best configuration by validation (by the mean over seeds when seeds are swept), with the
    first seed it ran with."""
    rows, _ = trial_rows(study)
    top = best(rows, sweep_space(study))
    if top is None:
        raise SweepError("no trial finished, so there is no configuration to test")
    return {n: top[n] for n in sweep_space(study).names}


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval while it runs, from a thread."""
    db = _storage_of(study)
    interval = db.get_heartbeat_interval() if hasattr(db, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    trial_id = db.get_trial_id_from_study_id_trial_number(db.get_study_id_from_name(study.study_name),
                                                          trial.number)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            _beat(db, trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _beat(db: Any, trial_id: int) -> None:
    if getattr(db, "get_heartbeat_interval", lambda: None)():
        with contextlib.suppress(Exception):           # a missed beat is retried at the next interval
            db.record_heartbeat(trial_id)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's experimental-feature warnings, which say nothing to someone running a sweep."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


# ----------------------------------------------------------------------------------------------------------
# Results


def row(trial: optuna.trial.FrozenTrial, space: Space) -> dict[str, Any]:
    """One finished trial as a flat record: its configuration, parameter count, score, epochs, time."""
    attrs = trial.user_attrs
    config = attrs.get("config", trial.params) if attrs.get("role") == TEST_ROLE else trial.params
    scores = trial.intermediate_values
    value = trial.value if trial.value is not None else (scores[max(scores)] if scores else None)
    return {
        "trial": trial.number,
        "role": attrs.get("role", "trial"),
        "state": trial.state.name.lower(),
        **{name: config.get(name) for name in space.names},
        "params": attrs.get("params"),
        "rnn_params": attrs.get("rnn_params"),
        "score": value,
        "epochs": attrs.get("epochs", max(scores) if scores else None),
        "seconds": attrs.get("seconds"),
        "worker": attrs.get("worker"),
        "error": attrs.get("error"),
        **attrs.get("metrics", {}),      # the test trial's scores: val, test, val_accuracy, test_accuracy
    }


def trial_rows(study: optuna.Study) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(one row per trial that ran to its end, in trial order; the test row or None). Attempts that went
    stale and were queued again are left out: their retry stands for them."""
    space = sweep_space(study)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    rows = [row(t, space) for t in trials if t.state in finished and t.number not in retried]
    test = [r for r in rows if r["role"] == TEST_ROLE]
    return [r for r in rows if r["role"] != TEST_ROLE], (test[-1] if test else None)


def progress(study: optuna.Study, test: bool = True) -> dict[str, int]:
    """How many trials are queued, running and finished (the test trial included unless `test` is False)."""
    counts = {"waiting": 0, "running": 0, "finished": 0}
    for t in study.get_trials(deepcopy=False):
        if not test and t.user_attrs.get("role") == TEST_ROLE:
            continue
        key = {TrialState.WAITING: "waiting", TrialState.RUNNING: "running"}.get(t.state, "finished")
        counts[key] += 1
    return counts


def groups(rows: list[dict[str, Any]], space: Space) -> dict[tuple, list[dict[str, Any]]]:
    """Completed rows by configuration (every swept value but the seed), in trial order. A configuration
    with a pruned or failed seed is left out: the mean of the seeds that survived would flatter it."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    dropped = set()
    for r in sorted(rows, key=lambda r: r["trial"]):
        key = tuple(r.get(n) for n in space.config_names)
        if r["state"] == "complete" and r["score"] is not None:
            out.setdefault(key, []).append(r)
        else:
            dropped.add(key)
    return {key: rs for key, rs in out.items() if key not in dropped}


def best(rows: list[dict[str, Any]], space: Space) -> dict[str, Any] | None:
    """The best configuration's first row, its `score` the mean validation score over its seeds (`runs`
    of them); the highest mean wins, the earliest trial on ties. None when no trial completed."""
    by_config = groups(rows, space)
    if not by_config:
        return None
    mean = {key: sum(r["score"] for r in rs) / len(rs) for key, rs in by_config.items()}
    key = max(by_config, key=lambda key: (mean[key], -by_config[key][0]["trial"]))
    return {**by_config[key][0], "score": mean[key], "runs": len(by_config[key])}
