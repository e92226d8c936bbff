"""The driver side of Ray Train: one TorchTrainer per job, over a per-worker function."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from ..config import TrainConfig
from ..data.specs import Spec, load_spec
from ..errors import BionerError, SystemFailure, first_line
from .contract import WorkerJob
from .local_ray import default_cpus_per_worker, ensure_ray
from .worker import train_loop_per_worker


def worker_job(
    cfg: TrainConfig,
    mlflow_run_id: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    spec: Spec | None = None,
) -> WorkerJob:
    """The job as the workers see it; joins or starts Ray to share out the cluster's CPUs.

    `spec`: the job's dataset spec, found by the caller; else found here, in the driver's working
    folder, which the workers do not share."""
    spec = spec if spec is not None else load_spec(cfg.dataset)
    ensure_ray()
    return WorkerJob(cfg, default_cpus_per_worker(cfg), mlflow_run_id, tracking_uri, progress, spec)


def fit(job: WorkerJob, name: str, storage: Path, callbacks=(), loop: Callable[[], None] | None = None, keep: int = 1):
    """Run `loop` (default: the training loop over `job`) on Ray Train; returns the Ray Train Result.

    Checkpoints go to `storage/name`; a job of the same name and storage restarts from the newest.
    `keep`: checkpoints kept; a training job keeps 2, so that `--resume` can fall back one epoch
    when the newest is damaged (train.checkpoints).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # lazy (platform/README.md)
    from ray.train.torch import TorchTrainer

    cfg = job.config
    trainer = TorchTrainer(
        loop or functools.partial(train_loop_per_worker, job),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": job.cpus, **({"GPU": 1} if cfg.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=list(callbacks),
        ),
    )
    return trainer.fit()


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and what it wraps: Ray Train's worker failures and controller failure, a Ray task
    error's original exception, Python's __cause__; outermost first."""
    out: list[BaseException] = []
    todo = [error]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        todo += list(getattr(e, "worker_failures", {}).values())
        todo += [getattr(e, "controller_failure", None), getattr(e, "cause", None), e.__cause__]
    return out


def training_failure(error: BaseException, run_id: str) -> BaseException:
    """What a failed fit is to its user. A mistake of theirs that a worker found (a BionerError raised
    there) is that BionerError again, in one line; anything else is a SystemFailure naming the run and
    the innermost error, with where Ray keeps the workers' logs."""
    causes = _causes(error)
    for e in causes:
        if isinstance(e, BionerError):
            return BionerError(first_line(e.args[0] if e.args else e, 1000))
    root = causes[-1]
    return SystemFailure(
        f"training run {run_id} stopped on the Ray workers: {type(root).__name__}: {first_line(root, 300)} "
        "(the workers' logs: `ray logs`, or /tmp/ray/session_latest/logs on their nodes)"
    )
