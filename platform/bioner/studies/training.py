"""`bioner train`: one training job, from validated input to a scored, logged model.

Validate the config, corpus and output folder before anything starts; open the job's MLflow run
(or reopen it with `--resume`); train on Ray Train; score the eval split; log predictions and the
model. Tuning refits and `bioner fidelity` run the same job.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data.job import load_job_data
from ..data.specs import Spec
from ..errors import BionerError
from ..infer.evaluate import evaluate_split, write_predictions
from ..infer.tagger import Tagger
from ..tracking.models import log_final
from ..train.checkpoints import restorable_checkpoint
from ..train.driver import fit, training_failure, worker_job
from ..train.preflight import check_job
from ..train.worker import MODEL_SUBDIR
from .jobs import Job
from .mlruns import training_run
from .setup import open_study

COMMAND = "train"
KEEP_CHECKPOINTS = 2  # the newest and the one before: --resume falls back one epoch if the newest is damaged


@dataclass
class TrainResult:
    run_id: str
    model_dir: Path
    metrics: dict
    predictions: Path
    model_uri: str  # the logged MLflow model (models:/m-...); runs:/<run_id>/model resolves to it too


def config_differs(cfg: TrainConfig) -> Callable[[Job], str | None]:
    """How a job's config is not `cfg` (the first key that differs), for `--resume`."""
    now = cfg.model_dump()

    def differs(job: Job) -> str | None:
        then = job.state.get("config", {})
        for k in now:
            if then.get(k) != now[k]:
                return (
                    f"--resume: {k} is {now[k]!r}, the interrupted job had {then.get(k)!r}; resume with the same config"
                )
        return None

    return differs


def check_checkpoints(cfg: TrainConfig, run_id: str, storage: Path) -> None:
    """The run's newest restorable checkpoint (damaged newer ones are dropped, one epoch back); a
    run that logged epochs but has no checkpoint left cannot be resumed."""
    from mlflow import MlflowClient  # lazy (platform/README.md)

    found = restorable_checkpoint(storage / run_id)
    if found is None:
        if MlflowClient(cfg.resolved_tracking_uri()).get_metric_history(run_id, "train_loss"):
            raise BionerError(
                f"--resume: run {run_id} logged epochs but its checkpoints are gone ({storage / run_id}); "
                "train again without --resume"
            )
        return
    for why in found.dropped:
        print(f"--resume: a checkpoint of run {run_id} cannot be restored ({why}); it is dropped", file=sys.stderr)
    if found.dropped:
        print(f"--resume: restarting from the checkpoint of epoch {found.epoch}", file=sys.stderr)


def run_training(
    cfg: TrainConfig,
    progress: bool = True,
    parent_run_id: str | None = None,
    tags: dict | None = None,
    resume: bool = False,
    spec: Spec | None = None,
) -> TrainResult:
    """The whole job: validate, open an MLflow run, train on Ray Train, score, log the model.

    Before any run opens or Ray starts: the corpus, the encoder (config and tokenizer loaded here),
    max_length, the output folder and, with `resume`, the job to continue and its checkpoints.
    `resume`: reopen that job's MLflow run and continue its Ray Train run (same name and storage),
    which restarts from its newest good checkpoint. `spec`: the dataset spec a study found already
    (else `cfg.dataset` is found here); the workers are handed it, as they run in folders of their own.
    """
    data = load_job_data(cfg, spec)  # corpus and spec errors surface here, before any run exists
    check_job(cfg, data.spec, [data.queries])
    storage = Path(cfg.output_dir).expanduser().resolve() / "ray_results"
    with contextlib.ExitStack() as stack:
        study = stack.enter_context(
            open_study(
                cfg,
                COMMAND,
                resume,
                f"training job of experiment {cfg.experiment!r}",
                differs=config_differs(cfg),
                before_ray=lambda job: check_checkpoints(cfg, job.run_id, storage),
            )
        )
        resumed = study.resumed
        run_id = stack.enter_context(
            training_run(cfg, study.experiment_id, data, parent_run_id, tags, resume_run_id=resumed and resumed.run_id)
        )
        if parent_run_id is None and resumed is None:  # a refit of a study is resumed by its study
            study.record(run_id, {"config": cfg.model_dump()})
        try:
            result = fit(
                worker_job(cfg, run_id, study.tracking_uri, progress, data.spec), run_id, storage, keep=KEEP_CHECKPOINTS
            )
        except Exception as e:  # Ray Train V2 raises the workers' failure; a returned one is result.error
            raise training_failure(e, run_id) from e
        if result.error:
            raise training_failure(result.error, run_id) from result.error
        model_dir = study.out_dir / "models" / run_id
        with result.checkpoint.as_directory() as d:
            shutil.copytree(Path(d) / MODEL_SUBDIR, model_dir, dirs_exist_ok=True)
        tagger = Tagger.load(model_dir, batch_size=cfg.eval_batch_size)
        metrics, pred = evaluate_split(
            tagger, data.eval, data.spec.types, cfg.multitask, progress, cfg.mrc_eval_rows, cfg.seed
        )
        preds = write_predictions(study.out_dir / "predictions" / f"{run_id}.{data.eval.name}.tsv", data.eval, pred)
        model_uri = log_final(metrics, preds, model_dir)
    return TrainResult(run_id, model_dir, metrics, preds, model_uri)
