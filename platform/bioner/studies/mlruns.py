"""The MLflow runs of train, tune and sweep: a study's parent run and its child runs, a training
job's run, and ending each with a status and a reason (tag stop_reason)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..config import TrainConfig
from ..data.job import JobData
from ..errors import BionerError, first_line
from ..tracking.store import flat_params, git_commit
from .tags import DATASET, ENCODER, GIT_COMMIT, INTERRUPTED, PARENT, STOP_REASON, TASK, task

if TYPE_CHECKING:
    from mlflow import MlflowClient


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param  # lazy (platform/README.md)

    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])


def finish(client: MlflowClient, run_id: str, status: str, reason: str | None = None) -> None:
    """End a run with a status (FINISHED, FAILED, KILLED) and, when given, why (tag stop_reason)."""
    if reason:
        client.set_tag(run_id, STOP_REASON, reason)
    client.set_terminated(run_id, status)


@contextlib.contextmanager
def ends_on_error(client: MlflowClient, run_id: str, passthrough: tuple[type[BaseException], ...] = ()):
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


def start_parent(client: MlflowClient, exp_id: str, name: str, tags: dict, params: dict) -> str:
    """A study's new parent run, with its tags and params; returns its run ID."""
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    log_params(client, run_id, params)
    return run_id


def reopen_parent(client: MlflowClient, run_id: str) -> None:
    """A resumed study's parent run RUNNING again."""
    client.update_run(run_id, status="RUNNING")


def open_child(
    client: MlflowClient,
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


def end_if_interrupted(client: MlflowClient, parent: str, results, total: int, error: Interrupted) -> None:
    """Tune returns early when its driver is interrupted: the parent ends KILLED, marked interrupted.
    Trials that were running when Ctrl-C came can be counted as ended (the error Ray raises as it
    stops them), so a count alone can miss it: `fit_or_restore` also records the signal."""
    if getattr(results, "interrupted", False) or results.num_terminated + results.num_errors < total:
        client.set_tag(parent, INTERRUPTED, "true")
        client.set_terminated(parent, "KILLED")
        raise error


def run_name(cfg: TrainConfig, data: JobData) -> str:
    return cfg.run_name or f"{data.spec.name}-{cfg.query_source if cfg.multitask else 'single'}-s{cfg.seed}"


@contextlib.contextmanager
def training_run(
    cfg: TrainConfig,
    exp_id: str,
    data: JobData,
    parent_run_id: str | None = None,
    extra_tags: dict | None = None,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """Open a training job's MLflow run as the active run in experiment `exp_id` (or reopen
    `resume_run_id`); on any error it ends FAILED (KILLED on Ctrl-C), never FINISHED."""
    import mlflow  # lazy (platform/README.md)

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
