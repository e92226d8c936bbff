"""The state through which `--resume` finds a job: one file per job, for train, tune and sweep alike.

`<output_dir>/<command>/<experiment>/jobs/<run_id>.json` holds what the job needs to be continued
(its config, its Tuner's folder, ...), and `<run_id>.lock` beside it is held while the job runs, so
two jobs of one experiment in one output_dir each keep their own state and `--resume` tells a dead
job from a running one. Older versions kept one `bioner_<command>.json` per experiment: it is still
read, as one more job.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import BionerError, ConfigError, first_line
from ..tracking.store import open_store


def experiment_dir(out_dir: Path, command: str, experiment: str) -> Path:
    """`<output_dir>/<command>/<experiment>/`: the experiment's jobs' states and their Tuners' folders."""
    return out_dir / command / experiment


def legacy_state_path(out_dir: Path, command: str, experiment: str) -> Path:
    """The one state file of older versions: the experiment's newest job of that command."""
    return experiment_dir(out_dir, command, experiment) / f"bioner_{command}.json"


def jobs_dir(out_dir: Path, command: str, experiment: str) -> Path:
    return experiment_dir(out_dir, command, experiment) / "jobs"


def write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves half a state file


def read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BionerError(
            f"--resume: {path} is damaged ({first_line(e, 120)}): delete it and start the job again"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("run_id", state.get("parent_run_id")), str):
        raise BionerError(f"--resume: {path} is damaged (not a job's state): delete it and start the job again")
    return state


@dataclass
class Job:
    """One job's state: its MLflow run (a study's parent run), the file it is kept in, and the rest."""

    run_id: str
    state_file: Path
    state: dict

    @property
    def lock(self) -> FileLock:
        """`<run_id>.lock` beside the state file, held while the job runs."""
        return FileLock(self.state_file.with_suffix(".lock"))

    @property
    def running(self) -> bool:
        """Whether a live process holds the job's lock (the OS drops it when the process dies)."""
        lock = self.lock
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False


def jobs(out_dir: Path, command: str, experiment: str) -> list[Job]:
    """Every job of the experiment, newest first. A damaged state file is refused, naming it."""
    d = jobs_dir(out_dir, command, experiment)
    found = [Job(p.stem, p, read_state(p)) for p in d.glob("*.json")] if d.is_dir() else []
    legacy = legacy_state_path(out_dir, command, experiment)
    if legacy.is_file():
        old = read_state(legacy)
        run_id = old.get("run_id") or old["parent_run_id"]  # a study's state named its parent run only
        if run_id not in {j.run_id for j in found}:
            found.append(Job(run_id, legacy, old))
    return sorted(found, key=lambda j: -float(j.state.get("started", 0)))  # the legacy file has no start time


def new_job(out_dir: Path, command: str, experiment: str, run_id: str, state: dict) -> Job:
    """A new job's state written, with its start time and process id."""
    path = jobs_dir(out_dir, command, experiment) / f"{run_id}.json"
    state = {"run_id": run_id, "started": time.time(), "pid": os.getpid(), **state}
    write_state(path, state)
    return Job(run_id, path, state)


@contextlib.contextmanager
def holding_lock(job: Job) -> Iterator[None]:
    """Hold the job's lock while it runs; a second process resuming it is refused."""
    job.state_file.parent.mkdir(parents=True, exist_ok=True)
    lock = job.lock
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BionerError(
            f"run {job.run_id} is running in another process (lock {lock.lock_file}); "
            "wait for it, or stop that process first"
        ) from None
    try:
        yield
    finally:
        lock.release()


def resumable_job(
    out_dir: Path,
    command: str,
    experiment: str,
    what: str,
    tracking_uri: str,
    differs: Callable[[Job], str | None] = lambda job: None,
    finished_ok: bool = False,
) -> Job:
    """The newest job of the experiment that `--resume` can continue: not running, the same config
    (`differs` says how one is not), and, unless `finished_ok`, not finished. Refused in one line
    naming why when there is none."""
    from mlflow import MlflowClient  # lazy (platform/README.md)

    all_jobs = jobs(out_dir, command, experiment)
    if not all_jobs:
        raise BionerError(f"--resume: no {what} to resume ({jobs_dir(out_dir, command, experiment)} has none)")
    open_store(tracking_uri, create=False)
    client = MlflowClient(tracking_uri)
    differing = running = finished = None
    for job in all_jobs:
        why = differs(job)
        if why:
            differing = differing or why
        elif job.running:
            running = running or job
        elif not finished_ok and client.get_run(job.run_id).info.status == "FINISHED":
            finished = finished or job
        else:
            return job
    if running:
        raise BionerError(
            f"--resume: the {what} with this config (run {running.run_id}) is still running "
            f"(pid {running.state.get('pid', '?')}); wait for it, or stop it first"
        )
    if differing:
        raise ConfigError(differing)
    raise BionerError(
        f"--resume: the last job of experiment {experiment!r} (run {finished.run_id}) has finished; "
        f"{command} without --resume"
    )
