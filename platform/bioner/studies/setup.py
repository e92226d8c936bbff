"""What train, tune and sweep each set up before their first run: the output folder, the tracking
store (refused at once if a server does not answer), the job `--resume` continues, Ray, the
experiment and a client; and the job's state, its lock held until the job ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import TrainConfig
from ..tracking.store import check_reachable, prepare_output_dir, use_experiment
from ..train.preflight import start_ray
from .jobs import Job, experiment_dir, holding_lock, new_job, resumable_job
from .mlruns import reopen_parent

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass
class OpenStudy:
    """A job's setting, from `open_study`. `resumed`: the job `--resume` continues, else None."""

    command: str
    experiment: str
    out_dir: Path
    tracking_uri: str
    experiment_id: str
    client: MlflowClient
    resumed: Job | None
    _locks: contextlib.ExitStack = field(repr=False)

    def record(self, run_id: str, state: dict) -> Job:
        """A new job's state written (what `--resume` will need), its lock held until the study closes."""
        job = new_job(self.out_dir, self.command, self.experiment, run_id, state)
        self._locks.enter_context(holding_lock(job))
        return job

    def parent_state(self, start_parent: Callable[[], tuple[str, dict]]) -> dict:
        """A study's state: the resumed job's, its parent run made RUNNING again; else a new parent run's
        (`start_parent()` opens it and returns its ID and state), recorded as a new job."""
        if self.resumed is not None:
            reopen_parent(self.client, self.resumed.run_id)
            return self.resumed.state
        run_id, state = start_parent()
        return self.record(run_id, state).state

    def run_dir(self, run_id: str) -> Path:
        """The folder of a study's Tuner (Ray Tune's experiment folder)."""
        return experiment_dir(self.out_dir, self.command, self.experiment) / run_id


@contextlib.contextmanager
def open_study(
    cfg: TrainConfig,
    command: str,
    resume: bool,
    what: str,
    differs: Callable[[Job], str | None] = lambda job: None,
    finished_ok: bool = False,
    before_ray: Callable[[Job], None] = lambda job: None,
) -> Iterator[OpenStudy]:
    """Set up a job of `command` (train, tune, sweep); `cfg` is its config (a study's own, which has
    output_dir, tracking_uri, experiment and the Ray settings). With `resume`, the job to continue is
    found first (`what` names it in messages; `differs` and `finished_ok` as `jobs.resumable_job`) and
    `before_ray` may refuse it, so that a job that cannot go on is refused before Ray starts."""
    from mlflow import MlflowClient  # lazy (platform/README.md)

    out_dir = prepare_output_dir(cfg.output_dir)
    uri = cfg.resolved_tracking_uri()
    check_reachable(uri)
    resumed = None
    if resume:
        resumed = resumable_job(out_dir, command, cfg.experiment, what, uri, differs, finished_ok)
        before_ray(resumed)
    start_ray(cfg)  # and the cluster has the GPUs asked for
    exp_id = use_experiment(uri, cfg.experiment, out_dir)
    with contextlib.ExitStack() as locks:
        if resumed is not None:
            locks.enter_context(holding_lock(resumed))
        yield OpenStudy(command, cfg.experiment, out_dir, uri, exp_id, MlflowClient(uri), resumed, locks)
