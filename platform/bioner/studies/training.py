"""`bioner train`: one training job, from validated input to a scored, logged model.

Validate the config, corpus and output folder before anything starts; open the job's MLflow run
(or reopen it with `--resume`); train on Ray Train; score the eval split; log predictions and the
model. Tuning refits and `bioner fidelity` run the same job.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data.job import load_job_data
from ..data.specs import Spec
from ..errors import BionerError
from ..infer.evaluate import evaluate_split, write_predictions
from ..infer.tagger import Tagger
from ..tracking.models import log_final
from ..tracking.store import check_reachable, open_store, prepare_output_dir
from ..train.checkpoints import restorable_checkpoint
from ..train.driver import fit, worker_job
from ..train.preflight import check_job, start_ray
from ..train.worker import MODEL_SUBDIR
from .runs import holding_job_lock, job_is_running, job_states, jobs_dir, training_run, write_job_state

COMMAND = "train"
KEEP_CHECKPOINTS = 2  # the newest and the one before: --resume falls back one epoch if the newest is damaged


@dataclass
class TrainResult:
    run_id: str
    model_dir: Path
    metrics: dict
    predictions: Path
    model_uri: str  # the logged MLflow model (models:/m-...); runs:/<run_id>/model resolves to it too


@dataclass
class Resumable:
    run_id: str
    state_file: Path


def resumable_run(cfg: TrainConfig, out_dir: Path) -> Resumable:
    """The experiment's newest training job in this output_dir that stopped unfinished with this
    config. Jobs still running (their lock is held) are left alone; finished ones too."""
    from mlflow import MlflowClient  # lazy (platform/README.md)

    what = f"training job of experiment {cfg.experiment!r}"
    states = job_states(out_dir, COMMAND, cfg.experiment, what)
    if not states:
        raise BionerError(f"--resume: no {what} to resume ({jobs_dir(out_dir, COMMAND, cfg.experiment)} has none)")
    uri = cfg.resolved_tracking_uri()
    open_store(uri, create=False)
    client, now = MlflowClient(uri), cfg.model_dump()
    differing = running = finished = None
    for st in states:
        changed = [k for k in now if st.get("config", {}).get(k) != now[k]]
        if changed:
            differing = differing or (st, changed[0])
        elif job_is_running(Path(st["path"])):
            running = running or st
        elif client.get_run(st["run_id"]).info.status == "FINISHED":
            finished = finished or st
        else:
            return Resumable(st["run_id"], Path(st["path"]))
    if running:
        raise BionerError(
            f"--resume: the {what} with this config (run {running['run_id']}) is still running "
            f"(pid {running.get('pid', '?')}); wait for it, or stop it first"
        )
    if differing:
        st, k = differing
        raise BionerError(
            f"--resume: {k} is {now[k]!r}, the interrupted job had {st['config'].get(k)!r}; resume with the same config"
        )
    raise BionerError(
        f"--resume: the last job of experiment {cfg.experiment!r} (run {finished['run_id']}) has finished; "
        "train without --resume"
    )


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
    out_dir = prepare_output_dir(cfg.output_dir)
    uri = cfg.resolved_tracking_uri()
    storage = out_dir / "ray_results"
    check_reachable(uri)  # an MLflow server that does not answer: before Ray starts
    resumed = resumable_run(cfg, out_dir) if resume else None
    if resumed:
        check_checkpoints(cfg, resumed.run_id, storage)
    start_ray(cfg)  # and the cluster has the GPUs asked for
    with contextlib.ExitStack() as stack:
        if resumed:
            stack.enter_context(holding_job_lock(resumed.state_file))
        run_id = stack.enter_context(
            training_run(cfg, data, parent_run_id, tags, resume_run_id=resumed and resumed.run_id)
        )
        if parent_run_id is None and resumed is None:  # a refit of a study is resumed by its study
            state_file = jobs_dir(out_dir, COMMAND, cfg.experiment) / f"{run_id}.json"
            stack.enter_context(holding_job_lock(state_file))
            write_job_state(state_file, run_id, {"config": cfg.model_dump()})
        result = fit(worker_job(cfg, run_id, uri, progress, data.spec), run_id, storage, keep=KEEP_CHECKPOINTS)
        if result.error:
            raise result.error
        model_dir = out_dir / "models" / run_id
        with result.checkpoint.as_directory() as d:
            shutil.copytree(Path(d) / MODEL_SUBDIR, model_dir, dirs_exist_ok=True)
        tagger = Tagger.load(model_dir, batch_size=cfg.eval_batch_size)
        metrics, pred = evaluate_split(
            tagger, data.eval, data.spec.types, cfg.multitask, progress, cfg.mrc_eval_rows, cfg.seed
        )
        preds = write_predictions(out_dir / "predictions" / f"{run_id}.{data.eval.name}.tsv", data.eval, pred)
        model_uri = log_final(metrics, preds, model_dir)
    return TrainResult(run_id, model_dir, metrics, preds, model_uri)
