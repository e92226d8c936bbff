"""`bioner train`: one training job, from validated input to a scored, logged model.

Validate the config, corpus and output folder before anything starts; open the job's MLflow run
(or reopen it with `--resume`); train on Ray Train; score the eval split; log predictions and the
model. Tuning refits and `bioner fidelity` run the same job.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data.job import load_job_data
from ..errors import BionerError
from ..infer.evaluate import evaluate_split, write_predictions
from ..infer.tagger import Tagger
from ..tracking.models import log_final
from ..tracking.store import check_reachable, prepare_output_dir
from ..train.driver import fit, worker_job
from ..train.worker import MODEL_SUBDIR
from .runs import read_state, state_path, training_run, write_state

COMMAND = "train"


@dataclass
class TrainResult:
    run_id: str
    model_dir: Path
    metrics: dict
    predictions: Path
    model_uri: str  # the logged MLflow model (models:/m-...); runs:/<run_id>/model resolves to it too


def resumable_run(cfg: TrainConfig, out_dir: Path) -> str:
    """The MLflow run id of the experiment's last job, if it can be continued with this config."""
    from mlflow import MlflowClient  # lazy: mlflow takes 2 s to import, `bioner --help` none

    state = read_state(state_path(out_dir, COMMAND, cfg.experiment), f"training job of experiment {cfg.experiment!r}")
    now = cfg.model_dump()
    changed = [k for k in now if state["config"].get(k) != now[k]]
    if changed:
        k = changed[0]
        raise BionerError(f"--resume: {k} is {now[k]!r}, the interrupted job had {state['config'].get(k)!r}; resume with the same config")
    uri = cfg.resolved_tracking_uri()
    check_reachable(uri)
    status = MlflowClient(uri).get_run(state["run_id"]).info.status
    if status == "FINISHED":
        raise BionerError(f"--resume: the last job of experiment {cfg.experiment!r} (run {state['run_id']}) has finished; train without --resume")
    return state["run_id"]


def run_training(
    cfg: TrainConfig, progress: bool = True, parent_run_id: str | None = None, tags: dict | None = None, resume: bool = False
) -> TrainResult:
    """The whole job: validate, open an MLflow run, train on Ray Train, score, log the model.

    `resume`: reopen the experiment's last job's MLflow run and continue its Ray Train run (same
    name and storage), which restarts from the newest checkpoint of that run.
    """
    data = load_job_data(cfg)  # corpus and spec errors surface here, before any run exists
    out_dir = prepare_output_dir(cfg.output_dir)
    uri = cfg.resolved_tracking_uri()
    resume_id = resumable_run(cfg, out_dir) if resume else None
    with training_run(cfg, data, parent_run_id, tags, resume_run_id=resume_id) as run_id:
        if parent_run_id is None and resume_id is None:
            write_state(state_path(out_dir, COMMAND, cfg.experiment), {"run_id": run_id, "config": cfg.model_dump()})
        result = fit(worker_job(cfg, run_id, uri, progress), run_id, out_dir / "ray_results")
        if result.error:
            raise result.error
        model_dir = out_dir / "models" / run_id
        with result.checkpoint.as_directory() as d:
            shutil.copytree(Path(d) / MODEL_SUBDIR, model_dir, dirs_exist_ok=True)
        tagger = Tagger.load(model_dir, batch_size=cfg.eval_batch_size)
        metrics, pred = evaluate_split(tagger, data.eval, data.spec.types, cfg.multitask, progress, cfg.mrc_eval_rows, cfg.seed)
        preds = write_predictions(out_dir / "predictions" / f"{run_id}.{data.eval.name}.tsv", data.eval, pred)
        model_uri = log_final(metrics, preds, model_dir)
    return TrainResult(run_id, model_dir, metrics, preds, model_uri)
