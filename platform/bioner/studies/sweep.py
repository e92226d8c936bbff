"""`bioner sweep`: grids of real training runs (datasets x variants x seeds [x fractions]) on Ray Tune.

A sweep answers "does the MRC objective help, with which query, by how much": every cell is a
full training run on the paper's protocol (train+devel -> test), tracked as a nested MLflow run
under one parent, with its test predictions logged so that `bioner report` can pair seeds and run
a bootstrap test. The grid goes through `tune.grid_search` without a scheduler (no early
stopping), one function trainable per cell that builds its own TorchTrainer, as in tuning.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.job import load_job_data
from ..data.queries import Queries
from ..data.specs import Spec
from ..infer.evaluate import evaluate_split, write_predictions
from ..infer.tagger import Tagger
from ..tracking.metrics import metric_key
from ..tracking.store import flat_params, git_commit
from ..train.driver import fit, worker_job
from ..train.local_ray import default_cpus_per_worker, ensure_ray
from ..train.preflight import check_job
from ..train.worker import MODEL_SUBDIR
from . import mlruns
from .jobs import Job
from .setup import OpenStudy, open_study
from .sweep_config import SET_BY_SWEEP, Cell, SweepConfig, dataset_name, grid
from .tags import (
    DATASET,
    ENCODER,
    GIT_COMMIT,
    KIND,
    PROFILE,
    SWEEP_BASELINE,
    SWEEP_CELL,
    SWEEP_CELLS,
    SWEEP_CORPORA,
    SWEEP_DATASETS,
    SWEEP_FRACTION,
    SWEEP_SEED,
    SWEEP_VARIANT,
    SWEEP_VARIANTS,
    TASK,
    TRIAL_ID,
    Kind,
    task,
)
from .tuner import fit_or_restore

COMMAND = "sweep"
TRIAL_CPU = 0.01  # the cell function only waits on its trainer: the workers get the cores


@dataclass(frozen=True)
class Sweep:
    """What every cell of one sweep shares (handed to cells with tune.with_parameters)."""

    cells: dict[str, Cell]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_dir: Path
    predictions: Path
    # dataset name -> its spec, found by the driver: a cell runs in a folder of its own, where a spec named
    # from the working folder is not found
    specs: dict[str, Spec]


RESUMED = "cell_resumed"  # in a cell's Tune result (never in MLflow): it finished before this `--resume`


def sweep_cell(config: dict, sweep: Sweep) -> None:
    """One grid cell: a nested MLflow run, a TorchTrainer fit, test scores and predictions."""
    from mlflow import MlflowClient  # lazy (platform/README.md)
    from ray import tune

    cell = sweep.cells[config["cell"]]
    client = MlflowClient(sweep.tracking_uri)
    run_id, done = _cell_run(client, sweep, cell, tune.get_context().get_trial_id())
    if done is not None:  # finished before a restart: keep it, do not train again
        tune.report({**done.data.metrics, RESUMED: 1})
        return
    with mlruns.ends_on_error(client, run_id):
        metrics = _train_and_score(cell.config, client, run_id, sweep, cell)
    mlruns.finish(client, run_id, "FINISHED", f"completed {cell.config.epochs} epochs")
    tune.report(metrics)


def _cell_run(client, sweep: Sweep, cell: Cell, trial_id: str):
    """The cell's MLflow run (reused after `--resume`) and, if it already finished, that run."""
    cfg = cell.config
    tags = {
        KIND: Kind.CELL,
        SWEEP_VARIANT: cell.variant,
        SWEEP_SEED: str(cell.seed),
        SWEEP_FRACTION: f"{cell.train_fraction:g}",
        DATASET: cell.dataset,
        ENCODER: cfg.encoder,
        TASK: task(cfg),
        TRIAL_ID: trial_id,
    }
    members = sweep.specs[cell.dataset].members
    if len(members) > 1:
        tags[SWEEP_CORPORA] = ",".join(m.name for m in members)

    def finished(run) -> bool:
        return run.info.status == "FINISHED" and f"{cfg.eval_split}_f1" in run.data.metrics

    return mlruns.open_child(
        client,
        sweep.experiment_id,
        sweep.parent_run_id,
        SWEEP_CELL,
        cell.key,
        cell.key,
        tags,
        flat_params(cfg),
        done=finished,
    )


def _train_and_score(cfg, client, run_id: str, sweep: Sweep, cell: Cell) -> dict:
    from mlflow.entities import Metric  # lazy (platform/README.md)

    storage = sweep.run_dir / "cells"
    name = "cell-" + cell.key.replace(":", "_")
    t0 = time.perf_counter()
    spec = sweep.specs[cell.dataset]
    result = fit(worker_job(cfg, run_id, sweep.tracking_uri, progress=False, spec=spec), name, storage)
    if result.error:
        raise result.error
    train_s = time.perf_counter() - t0
    data = load_job_data(cfg, spec)
    with result.checkpoint.as_directory() as d:
        tagger = Tagger.load(Path(d) / MODEL_SUBDIR, batch_size=cfg.eval_batch_size)
        metrics, pred = evaluate_split(tagger, data.eval, data.spec.types, with_mrc=False, progress=False)
    preds = write_predictions(sweep.predictions / f"{run_id}.{data.eval.name}.tsv", data.eval, pred)
    client.log_artifact(run_id, str(preds), "predictions")
    metrics["train_seconds"] = train_s
    metrics["train_sentences"] = float(len(data.train))
    ts = int(time.time() * 1000)
    # Logged at the last epoch's step: a per-epoch curve of the same key must not hide it.
    client.log_batch(run_id, metrics=[Metric(metric_key(k), float(v), ts, cfg.epochs) for k, v in metrics.items()])
    shutil.rmtree(storage / name, ignore_errors=True)  # the model is scored; its checkpoints are disk only
    return metrics


# --------------------------------------------------------------------------- driver


class SweepInterrupted(mlruns.Interrupted):
    """The sweep stopped before its last cell (Ctrl-C): the state is saved for --resume."""


@dataclass
class SweepOutcome:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    cells: int
    finished: int


def run_sweep(cfg: SweepConfig, resume: bool = False, progress: bool = True) -> SweepOutcome:
    cells = grid(cfg)
    specs = _preflight(cfg, cells)
    keys = [c.key for c in cells]

    def grid_differs(job: Job) -> str | None:
        then = job.state.get("cells", [])
        if then == keys:
            return None
        return (
            f"--resume: the grid differs from the interrupted sweep's ({len(then)} cells, now {len(keys)}): "
            "resume with the same config and --set values"
        )

    what = f"sweep of experiment {cfg.experiment!r}"
    with open_study(cfg, COMMAND, resume, what, differs=grid_differs, finished_ok=True) as st:
        return _run(cfg, st, cells, specs, progress)


def _run(cfg: SweepConfig, st: OpenStudy, cells: list[Cell], specs: dict[str, Spec], progress: bool) -> SweepOutcome:
    client, uri, exp_id = st.client, st.tracking_uri, st.experiment_id
    state = st.parent_state(lambda: _start_parent(st, cfg, cells))
    parent = state["parent_run_id"]
    with mlruns.ends_on_error(client, parent, passthrough=(SweepInterrupted,)):
        ensure_ray()
        cells, conc = _place(cfg, cells)
        sweep = Sweep(
            {c.key: c for c in cells}, uri, exp_id, parent, Path(state["run_dir"]), st.out_dir / "predictions", specs
        )
        results = _fit_grid(sweep, conc, progress)
        done = sum(1 for r in results if r.error is None and r.metrics and f"{cfg.eval_split}_f1" in r.metrics)
        mlruns.end_if_interrupted(
            client,
            parent,
            results,
            len(cells),
            SweepInterrupted(
                f"sweep interrupted after {done} finished cell(s) of {len(cells)}: continue with `bioner sweep ... "
                "--resume`"
            ),
        )
        client.log_metric(parent, "cells_finished", done)
        client.set_terminated(parent, "FINISHED" if done == len(cells) else "FAILED")
        return SweepOutcome(parent, exp_id, uri, len(cells), done)


def _preflight(cfg: SweepConfig, cells: list[Cell]) -> dict[str, Spec]:
    """Corpus, spec, encoder and max_length of every kind of cell, before any run exists; returns the
    spec of each dataset by its name in the grid."""
    specs = {}
    for ds in cfg.dataset_list():
        mine = [c.config for c in cells if c.dataset == dataset_name(ds)]
        data = load_job_data(mine[0])
        specs[dataset_name(ds)] = data.spec
        kinds = {(c.encoder, c.max_length, c.trust_remote_code): c for c in mine}
        for c in kinds.values():
            sources = sorted(
                {x.query_source for x in mine if x.multitask and (x.encoder, x.max_length) == (c.encoder, c.max_length)}
            )
            queries = [
                Queries.build(data.spec, s, data.train, c.seed, c.dictionary_examples) for s in sources if s != "none"
            ]
            check_job(c, data.spec, queries or [None])
    return specs


def _start_parent(st: OpenStudy, cfg: SweepConfig, cells: list[Cell]) -> tuple[str, dict]:
    """A new sweep's parent run, and its state."""
    tags = {
        KIND: Kind.SWEEP,
        ENCODER: cfg.encoder,
        PROFILE: cfg.profile,
        GIT_COMMIT: git_commit(),
        SWEEP_DATASETS: ",".join(dataset_name(d) for d in cfg.dataset_list()),
        SWEEP_VARIANTS: ",".join(cfg.variants),
        SWEEP_BASELINE: cfg.baseline_variant() or "",
        SWEEP_CELLS: str(len(cells)),
    }
    params = {k: v for k, v in flat_params(cfg.train_config()).items() if k not in SET_BY_SWEEP + ("run_name",)}
    params.update(
        profile=cfg.profile, seeds=str(cfg.seeds), train_fractions=",".join(f"{f:g}" for f in cfg.fraction_list())
    )
    run_id = mlruns.start_parent(st.client, st.experiment_id, f"sweep-{cfg.experiment}", tags, params)
    st.client.log_dict(
        run_id,
        {"variants": cfg.variants, "per_dataset": cfg.per_dataset, "cells": [c.key for c in cells]},
        "sweep.json",
    )
    return run_id, {"parent_run_id": run_id, "run_dir": str(st.run_dir(run_id)), "cells": [c.key for c in cells]}


def _place(cfg: SweepConfig, cells: list[Cell]) -> tuple[list[Cell], int]:
    """Cells at once (from the cluster's GPUs or CPUs) and each worker's CPU share."""
    import ray  # lazy (platform/README.md)

    res = ray.cluster_resources()
    if cfg.max_concurrent_trials:
        conc = cfg.max_concurrent_trials
    elif cfg.use_gpu:
        conc = max(1, int(res.get("GPU", 0) // cfg.num_workers))
    elif cfg.cpus_per_worker:
        conc = max(1, math.floor(res.get("CPU", 1) / (cfg.num_workers * cfg.cpus_per_worker + TRIAL_CPU)))
    else:
        conc = 1  # one cell with every core beats several fighting over two
    if cfg.cpus_per_worker is None:
        cpw = default_cpus_per_worker(cfg, conc, TRIAL_CPU)
        cells = [dataclasses.replace(c, config=c.config.train_config(cpus_per_worker=cpw)) for c in cells]
    return cells, conc


def _fit_grid(sweep: Sweep, conc: int, progress: bool):
    from ray import tune  # lazy (platform/README.md)

    trainable = tune.with_resources(tune.with_parameters(sweep_cell, sweep=sweep), {"cpu": TRIAL_CPU})

    def build():
        return tune.Tuner(
            trainable,
            param_space={"cell": tune.grid_search(list(sweep.cells))},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=conc),
            run_config=tune.RunConfig(
                name=sweep.run_dir.name,
                storage_path=str(sweep.run_dir.parent),
                verbose=0,
                callbacks=[progress_callback(len(sweep.cells))] if progress else [],
            ),
        )

    # Never Tuner.restore: it puts every errored cell back at once, past max_concurrent_trials (cells
    # then train side by side, their train_seconds measuring the wait). A new
    # Tuner over the grid loses nothing: a finished cell returns its MLflow run's scores, and an
    # unfinished one restarts from its own checkpoints (cells/<name>).
    return fit_or_restore(sweep.run_dir, trainable, False, build)


def progress_callback(total: int):
    """One line per finished cell with the time left, instead of Tune's status tables."""
    from ray.tune import Callback  # lazy (platform/README.md)

    class Progress(Callback):
        def __init__(self, total: int):
            # Tune pickles its callbacks with the run config: plain print, no console object.
            self.total, self.done, self.t0 = total, 0, time.perf_counter()
            self.kept = 0  # cells finished before a `--resume`: they take no time now, the estimate leaves them out

        def on_trial_start(self, iteration, trials, trial, **info):
            print(f"[{self.done}/{self.total}] starting {trial.config['cell']}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line(trial, "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED")

        def _line(self, trial, what: str):
            result = trial.last_result or {}
            self.done += 1
            if result.get(RESUMED):
                self.kept += 1
                what = "kept (finished before --resume)"
            el = time.perf_counter() - self.t0
            trained = self.done - self.kept
            left = (
                f"about {el / trained * (self.total - self.done) / 60:.1f} min left" if trained else "time left unknown"
            )
            f1 = next((v for k, v in result.items() if k.endswith("_f1") and k.count("_") == 1), None)
            score = f", F1 {f1:.4f}" if isinstance(f1, float) else ""
            print(
                f"[{self.done}/{self.total}] {trial.config['cell']} {what}{score} ({el / 60:.1f} min so far, {left})",
                flush=True,
            )

    return Progress(total)
