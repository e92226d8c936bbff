"""The MLflow tag names of studies: written by train, tune, sweep and annotate, read back by
`bioner report`, `runs compare`, `models` and `--resume`."""

from __future__ import annotations

from ..config import TrainConfig

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
