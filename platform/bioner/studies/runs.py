"""Experiment plumbing shared by `bioner train`, `tune` and `sweep`.

The MLflow tag names (written here and by the studies, read back by `bioner report`, `runs
compare` and `--resume`), the parent run of a study and its child runs, ending a run with a status
and a reason, the state file through which `--resume` finds an experiment's newest job, and
fitting a Ray Tune Tuner or restoring the one a killed driver left.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..config import TrainConfig
from ..data.job import JobData
from ..errors import BionerError, first_line
from ..tracking.store import flat_params, git_commit, use_experiment

# --------------------------------------------------------------------------- tag names

PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
KIND = "bioner.kind"  # one of Kind below; a plain `bioner train` run has none
DATASET, ENCODER, TASK, GIT_COMMIT = "dataset", "encoder", "task", "git_commit"
STOP_REASON = "stop_reason"
TRIAL_ID = "ray.trial_id"
INTERRUPTED = "interrupted"
SEARCH_SPACE = "search_space"
REGISTERED_VERSION = "registered_version"
PROFILE = "profile"
SWEEP_CELL, SWEEP_VARIANT, SWEEP_SEED, SWEEP_FRACTION = (
    "sweep.cell",
    "sweep.variant",
    "sweep.seed",
    "sweep.train_fraction",
)
SWEEP_DATASETS, SWEEP_VARIANTS, SWEEP_BASELINE, SWEEP_CELLS = (
    "sweep.datasets",
    "sweep.variants",
    "sweep.baseline",
    "sweep.cells",
)
SWEEP_CORPORA = "sweep.corpora"  # a composite cell's member corpora, comma-separated


class Kind:
    """Values of the KIND tag."""

    TUNE, TRIAL, REFIT = "tune", "trial", "refit"
    SWEEP, CELL = "sweep", "cell"


def task(cfg: TrainConfig) -> str:
    return "multi-task" if cfg.multitask else "single-task"


# --------------------------------------------------------------------------- resume state


def state_path(out_dir: Path, command: str, experiment: str) -> Path:
    """`<output_dir>/<command>/<experiment>/bioner_<command>.json`: the experiment's newest job of
    that command, which `--resume` continues."""
    return out_dir / command / experiment / f"bioner_{command}.json"


def write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves half a state file


def read_state(path: Path, what: str) -> dict:
    if not path.is_file():
        raise BionerError(f"--resume: no {what} to resume ({path} not found)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BionerError(
            f"--resume: {path} is damaged ({first_line(e, 120)}): delete it and start the job again"
        ) from None
    if not isinstance(state, dict):
        raise BionerError(f"--resume: {path} is damaged (not a JSON object): delete it and start the job again")
    return state


# --------------------------------------------------------------------------- one state per job


def jobs_dir(out_dir: Path, command: str, experiment: str) -> Path:
    """`<output_dir>/<command>/<experiment>/jobs/`: `<run_id>.json` per job, and `<run_id>.lock`, held
    while the job runs. Two jobs of one experiment in one output_dir each keep their own state."""
    return state_path(out_dir, command, experiment).parent / "jobs"


def job_states(out_dir: Path, command: str, experiment: str, what: str) -> list[dict]:
    """Every job's state, newest first; each has `path` (its file) added. A damaged one is refused."""
    d = jobs_dir(out_dir, command, experiment)
    files = sorted(d.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if d.is_dir() else []
    legacy = state_path(out_dir, command, experiment)  # the one state file of older versions
    states = [{**read_state(p, what), "path": str(p)} for p in files]
    if legacy.is_file():
        old = read_state(legacy, what)
        if old.get("run_id") not in {s.get("run_id") for s in states}:
            states.append({**old, "path": str(legacy)})
    return sorted(states, key=lambda s: -float(s.get("started", 0)))


def write_job_state(path: Path, run_id: str, state: dict) -> None:
    """A new job's state (`path` is `<jobs_dir>/<run_id>.json`), with its start time and process id."""
    write_state(path, {"run_id": run_id, "started": time.time(), "pid": os.getpid(), **state})


@contextlib.contextmanager
def holding_job_lock(state_file: Path):
    """Hold `<run_id>.lock` beside the job's state while it runs. The OS lock ends with the process,
    so a killed job leaves it free and `--resume` can tell a dead job from a running one."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(state_file.with_suffix(".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BionerError(
            f"run {state_file.stem} is running in another process (lock {lock.lock_file}); "
            "wait for it, or stop that process first"
        ) from None
    try:
        yield
    finally:
        lock.release()


def job_is_running(state_file: Path) -> bool:
    lock = FileLock(Path(state_file).with_suffix(".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


# --------------------------------------------------------------------------- runs


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param  # lazy (platform/README.md)

    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])


def finish(client, run_id: str, status: str, reason: str | None = None) -> None:
    """End a run with a status (FINISHED, FAILED, KILLED) and, when given, why (tag stop_reason)."""
    if reason:
        client.set_tag(run_id, STOP_REASON, reason)
    client.set_terminated(run_id, status)


@contextlib.contextmanager
def ends_on_error(client, run_id: str, passthrough: tuple[type[BaseException], ...] = ()):
    """A run left by an error ends FAILED with the error as its stop_reason, by Ctrl-C KILLED; the
    exceptions in `passthrough` have ended the run themselves and go through untouched."""
    try:
        yield
    except passthrough:
        raise
    except KeyboardInterrupt:
        finish(client, run_id, "KILLED", "interrupted")
        raise
    except BaseException as e:
        finish(client, run_id, "FAILED", f"error: {first_line(e, 200)}")
        raise


def start_parent(
    client,
    exp_id: str,
    state_file: Path,
    name: str,
    tags: dict,
    params: dict,
    extra_state: Callable[[str], dict] = lambda run_id: {},
) -> dict:
    """A new parent run of a study, recorded in `state_file` as the experiment's newest job, with
    what `extra_state(run_id)` adds."""
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    log_params(client, run_id, params)
    state = {"parent_run_id": run_id, "run_dir": str(state_file.parent / run_id), **extra_state(run_id)}
    write_state(state_file, state)
    return state


def reopen_parent(client, state_file: Path, what: str, check: Callable[[dict], None] = lambda state: None) -> dict:
    """The state of the experiment's newest job of this command (`check` may refuse it), its parent
    run RUNNING again."""
    state = read_state(state_file, what)
    check(state)
    client.update_run(state["parent_run_id"], status="RUNNING")
    return state


def open_child(
    client,
    exp_id: str,
    parent_id: str,
    key: str,
    value: str,
    name: str,
    tags: dict,
    params: dict,
    done: Callable[[Any], bool] = lambda run: False,
) -> tuple[str, Any]:
    """The child run of `parent_id` tagged `key = value`, created with `tags` and `params`, or the one
    a restarted study made before, reopened. Returns (run id, that earlier run if `done(run)`, else
    None): a finished child is left as it is."""
    found = client.search_runs([exp_id], f"tags.`{PARENT}` = '{parent_id}' and tags.`{key}` = '{value}'")
    if found:
        run = found[0]
        if done(run):
            return run.info.run_id, run
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, None
    run_id = client.create_run(
        exp_id, run_name=name, tags={PARENT: parent_id, key: value, GIT_COMMIT: git_commit(), **tags}
    ).info.run_id
    log_params(client, run_id, params)
    return run_id, None


class Interrupted(BionerError):
    """A study stopped before its budget (Ctrl-C): its state is saved for --resume."""


def end_if_interrupted(client, parent: str, results, total: int, error: Interrupted) -> None:
    """Tune returns early when its driver is interrupted: the parent ends KILLED, marked interrupted.
    Trials that were running when Ctrl-C came can be counted as ended (the error Ray raises as it
    stops them), so a count alone can miss it: `fit_or_restore` also records the signal."""
    if getattr(results, "interrupted", False) or results.num_terminated + results.num_errors < total:
        client.set_tag(parent, INTERRUPTED, "true")
        client.set_terminated(parent, "KILLED")
        raise error


def fit_or_restore(run_dir: Path, trainable, resume: bool, build: Callable[[], Any]):
    """Restore the Tuner a killed driver left in `run_dir` (finished trials are not run again),
    else fit the Tuner that `build` makes. The result grid's `interrupted` says whether Ctrl-C
    (SIGINT) ended the fit early."""
    import signal
    import threading

    from ray import tune  # lazy (platform/README.md)

    before = signal.getsignal(signal.SIGINT)
    if resume and tune.Tuner.can_restore(str(run_dir)):
        results = tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True).fit()
    else:
        results = build().fit()
    # Tune installs its own SIGINT handler for the fit (in the main thread, unless
    # TUNE_DISABLE_SIGINT_HANDLER) and puts the previous one back only when the signal came; it
    # returns normally either way, so the handler in place now says which happened.
    watched = (
        threading.current_thread() is threading.main_thread()
        and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0"
    )
    results.interrupted = watched and signal.getsignal(signal.SIGINT) is before
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, before)
    return results


# --------------------------------------------------------------------------- a training job's run


def run_name(cfg: TrainConfig, data: JobData) -> str:
    return cfg.run_name or f"{data.spec.name}-{cfg.query_source if cfg.multitask else 'single'}-s{cfg.seed}"


@contextlib.contextmanager
def training_run(
    cfg: TrainConfig,
    data: JobData,
    parent_run_id: str | None = None,
    extra_tags: dict | None = None,
    resume_run_id: str | None = None,
):
    """Open a training job's MLflow run as the active run (or reopen `resume_run_id`); on any error
    it ends FAILED (KILLED on Ctrl-C), never FINISHED."""
    import mlflow  # lazy (platform/README.md)

    exp_id = use_experiment(cfg.resolved_tracking_uri(), cfg.experiment, Path(cfg.output_dir).resolve())
    tags = {
        DATASET: data.spec.name,
        ENCODER: cfg.encoder,
        TASK: task(cfg),
        GIT_COMMIT: git_commit(),
        **(extra_tags or {}),
    }
    if parent_run_id:
        tags[PARENT] = parent_run_id
    if resume_run_id:
        run = mlflow.start_run(run_id=resume_run_id)
    else:
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name(cfg, data), tags=tags)
    status = "FAILED"
    try:
        if not resume_run_id:  # a reopened run has its params and queries already
            mlflow.log_params(flat_params(cfg))
            mlflow.log_params({"train_sentences": len(data.train), f"{data.eval.name}_sentences": len(data.eval)})
            if data.queries:
                mlflow.log_dict(data.queries.to_dict(), "queries.json")
        yield run.info.run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status=status)
