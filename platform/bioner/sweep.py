"""Grids of real training runs (datasets x variants x seeds [x training fractions]) on Ray Tune.

A sweep answers "does the MRC objective help, with which query, by how much": every cell is a
full training run on the paper's protocol (train+devel -> test), tracked as a nested MLflow run
under one parent, with its test predictions logged so that `bioner report` can pair seeds and run
a bootstrap test. The grid goes through `tune.grid_search` without a scheduler (no early
stopping), one function trainable per cell that builds its own TorchTrainer, as in tuning.py.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from .config import TrainConfig, _deep_update, parse_overrides, read_yaml
from .corpora import format_validation_error
from .errors import BionerError, ConfigError

STATE_FILE = "bioner_sweep.json"
TRIAL_CPU = 0.01  # the cell function only waits on its trainer: the workers get the cores
SET_BY_SWEEP = ("dataset", "seed", "train_fraction")  # a variant cannot fix what the grid varies
SWEEP_KEYS = ("profile", "profiles", "seeds", "datasets", "variants", "train_fractions", "per_dataset", "baseline",
              "max_concurrent_trials")


class SweepConfig(TrainConfig):
    """A training config (applied to every cell) plus the grid."""

    profile: Literal["cpu", "gpu"] = Field("cpu", description="which block of `profiles` supplies the defaults")
    seeds: int = Field(3, ge=1, description="seeds per cell: seed, seed+1, ...")
    datasets: list[str] | None = Field(None, min_length=1, description="dataset names or spec paths (default: [dataset])")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"single": {"beta": 0.0}, "multi": {}}, min_length=1,
        description="variant name -> training-key overrides (e.g. single: {beta: 0})",
    )
    train_fractions: list[float] | None = Field(None, min_length=1, description="low-resource study: fractions of the training sentences")
    per_dataset: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="dataset name -> training-key overrides for its cells (e.g. epochs, the best query)"
    )
    baseline: str | None = Field(None, description="the single-task variant p-values are computed against (default: the one with beta 0)")
    max_concurrent_trials: int | None = Field(None, ge=1, description="cells at once (default: as many as the cluster's CPUs or GPUs hold)")

    @model_validator(mode="after")
    def _check_grid(self):
        if self.train_fractions and any(not 0 < f <= 1 for f in self.train_fractions):
            raise ValueError(f"train_fractions: every fraction must be in (0, 1], got {self.train_fractions}")
        for name, over in self.variants.items():
            if not isinstance(over, dict):
                raise ValueError(f"variants.{name}: a variant is a mapping of training keys (use {{}} for none)")
            fixed = [k for k in SET_BY_SWEEP if k in over]
            if fixed:
                raise ValueError(f"variants.{name}.{fixed[0]}: set by the sweep's grid, not by a variant")
        if self.baseline is not None and self.baseline not in self.variants:
            raise ValueError(f"baseline: {self.baseline!r} is not a variant ({', '.join(self.variants)})")
        return self

    def base(self) -> dict:
        return {k: getattr(self, k) for k in TrainConfig.model_fields}

    def dataset_list(self) -> list[str]:
        return list(self.datasets or [self.dataset])

    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]

    def fraction_list(self) -> list[float]:
        return list(self.train_fractions or [self.train_fraction])

    def baseline_variant(self) -> str | None:
        if self.baseline:
            return self.baseline
        return next((n for n, o in self.variants.items() if float(o.get("beta", self.beta)) == 0), None)


@dataclass(frozen=True)
class Cell:
    key: str
    dataset: str
    variant: str
    seed: int
    train_fraction: float
    config: dict  # a validated TrainConfig as a dict


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """YAML + `--set`; the chosen profile's block supplies defaults under the file's top-level keys."""
    raw = _deep_update(read_yaml(path), parse_overrides(overrides))
    profiles = raw.pop("profiles", None) or {}
    profile = raw.get("profile", "cpu")
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles: a mapping of profile name -> keys")
    if profiles and profile not in profiles:
        raise ConfigError(f"{path}: profile: {profile!r} is not in profiles ({', '.join(profiles)})")
    block = profiles.get(profile) or {}
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: profiles.{profile}: a mapping of keys")
    merged = _deep_update(copy.deepcopy(block), raw)
    merged["datasets"] = [_resolve_spec(d, path) for d in merged.get("datasets") or []] or None
    if isinstance(merged.get("dataset"), str):
        merged["dataset"] = _resolve_spec(merged["dataset"], path)
    try:
        cfg = SweepConfig(**merged)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e)}") from None
    grid(cfg, where=str(path))  # every cell must be a valid training config before anything starts
    return cfg


def _resolve_spec(name: Any, config_path) -> Any:
    """A relative spec path is relative to the config file, as in `bioner train`."""
    if isinstance(name, str) and name.endswith((".yaml", ".yml")):
        p = Path(name)
        if not p.is_absolute() and not p.exists():
            return str((Path(config_path).parent / p).resolve())
    return name


def _dataset_name(dataset: str) -> str:
    return Path(dataset).stem if dataset.endswith((".yaml", ".yml")) else dataset


def grid(cfg: SweepConfig, where: str = "sweep") -> list[Cell]:
    """Every cell's training config, seed-major: a sweep cut short still has whole seeds."""
    cells = []
    for seed in cfg.seed_list():
        for dataset in cfg.dataset_list():
            for frac in cfg.fraction_list():
                for name, over in cfg.variants.items():
                    values = {**cfg.base(), **cfg.per_dataset.get(_dataset_name(dataset), {}), **over,
                              "dataset": dataset, "seed": seed, "train_fraction": frac}
                    key = f"{_dataset_name(dataset)}:{name}:f{frac:g}:s{seed}"
                    values["run_name"] = key
                    try:
                        tc = TrainConfig(**values)
                    except ValidationError as e:
                        src = f"per_dataset.{_dataset_name(dataset)} or variants.{name}"
                        raise ConfigError(f"{where}: {src}: {format_validation_error(e)}") from None
                    cells.append(Cell(key, _dataset_name(dataset), name, seed, frac, tc.model_dump()))
    unknown = set(cfg.per_dataset) - {c.dataset for c in cells}
    if unknown:
        raise ConfigError(f"{where}: per_dataset.{sorted(unknown)[0]}: not one of the sweep's datasets")
    return cells


# --------------------------------------------------------------------------- one cell


def sweep_cell(config: dict) -> None:
    """One grid cell: a nested MLflow run, a TorchTrainer fit, test scores and predictions."""
    from mlflow import MlflowClient
    from ray import tune

    cell = config["cells"][config["cell"]]
    cfg = TrainConfig(**cell["config"])
    client = MlflowClient(config["tracking_uri"])
    run_id, done = _cell_run(client, config, cell, tune.get_context().get_trial_id())
    if done is not None:  # finished before a restart: keep it, do not train again
        tune.report(done)
        return
    try:
        metrics = _train_and_score(cfg, client, run_id, config, cell)
    except BaseException as e:
        client.set_tag(run_id, "stop_reason", f"error: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
        client.set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    client.set_tag(run_id, "stop_reason", f"completed {cfg.epochs} epochs")
    client.set_terminated(run_id, "FINISHED")
    tune.report(metrics)


def _cell_run(client, config: dict, cell: dict, trial_id: str) -> tuple[str, dict | None]:
    """The cell's MLflow run (reused after `--resume`) and its scores if it already finished."""
    from .tracking import flat_params, git_commit

    found = client.search_runs(
        [config["experiment_id"]],
        f"tags.mlflow.parentRunId = '{config['parent_run_id']}' and tags.`sweep.cell` = '{cell['key']}'",
    )
    if found:
        run = found[0]
        metric = f"{cell['config']['eval_split']}_f1"
        if run.info.status == "FINISHED" and metric in run.data.metrics:
            return run.info.run_id, dict(run.data.metrics)
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, None
    cfg = cell["config"]
    tags = {
        "mlflow.parentRunId": config["parent_run_id"],
        "bioner.kind": "cell",
        "sweep.cell": cell["key"],
        "sweep.variant": cell["variant"],
        "sweep.seed": str(cell["seed"]),
        "sweep.train_fraction": f"{cell['train_fraction']:g}",
        "dataset": cell["dataset"],
        "encoder": cfg["encoder"],
        "task": "multi-task" if cfg["beta"] > 0 else "single-task",
        "ray.trial_id": trial_id,
        "git_commit": git_commit(),
    }
    run_id = client.create_run(config["experiment_id"], run_name=cell["key"], tags=tags).info.run_id
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params(TrainConfig(**cfg)).items()])
    return run_id, None


def _train_and_score(cfg: TrainConfig, client, run_id: str, config: dict, cell: dict) -> dict:
    from .data import load_job_data
    from .predict import Tagger
    from .training import evaluate_split, fit, write_predictions

    storage = Path(config["storage"])
    name = "cell-" + cell["key"].replace(":", "_")
    t0 = time.perf_counter()
    result = fit(cfg, run_id, config["tracking_uri"], storage, name, progress=False)
    if result.error:
        raise result.error
    train_s = time.perf_counter() - t0
    data = load_job_data(cfg)
    with result.checkpoint.as_directory() as d:
        tagger = Tagger.load(Path(d) / "model", batch_size=cfg.eval_batch_size)
        metrics, pred = evaluate_split(tagger, data.eval, data.spec.types, with_mrc=False, progress=False)
    preds = write_predictions(Path(config["predictions"]) / f"{run_id}.{data.eval.name}.tsv", data.eval.tokens, data.eval.tags, pred)
    client.log_artifact(run_id, str(preds), "predictions")
    metrics["train_seconds"] = train_s
    metrics["train_sentences"] = float(len(data.train))
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    # Logged at the last epoch's step: a per-epoch curve of the same key must not hide it.
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, cfg.epochs) for k, v in metrics.items()])
    shutil.rmtree(storage / name, ignore_errors=True)  # the model is scored; its checkpoints are disk only
    return metrics


# --------------------------------------------------------------------------- driver


class SweepInterrupted(BionerError):
    """The sweep stopped before its last cell (Ctrl-C): the state is saved for --resume."""


@dataclass
class SweepOutcome:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    cells: int
    finished: int


def state_path(out_dir: Path, experiment: str) -> Path:
    return out_dir / "sweep" / experiment / STATE_FILE


def run_sweep(cfg: SweepConfig, resume: bool = False, progress: bool = True) -> SweepOutcome:
    from mlflow import MlflowClient

    from . import tracking
    from .data import load_job_data
    from .training import ensure_ray

    cells = grid(cfg)
    for ds in cfg.dataset_list():  # corpus and spec errors surface before any run exists
        load_job_data(TrainConfig(**next(c.config for c in cells if c.dataset == _dataset_name(ds))))
    out_dir = tracking.prepare_output_dir(cfg.output_dir)
    uri = cfg.resolved_tracking_uri()
    exp_id = tracking.use_experiment(uri, cfg.experiment, out_dir)
    client = MlflowClient(uri)
    spath = state_path(out_dir, cfg.experiment)
    keys = [c.key for c in cells]
    if resume:
        state = _resume_state(spath, keys, client)
    else:
        state = _new_parent(client, exp_id, cfg, cells, spath)
    parent = state["parent_run_id"]
    with tracking.ends_on_error(client, parent, passthrough=(SweepInterrupted,)):
        ensure_ray()
        cells, conc = _place(cfg, cells)
        results = _fit_grid(cells, conc, uri, exp_id, parent, state, out_dir, resume, progress)
        done = sum(1 for r in results if r.error is None and r.metrics and f"{cfg.eval_split}_f1" in r.metrics)
        if results.num_terminated + results.num_errors < len(cells):
            client.set_tag(parent, "interrupted", "true")
            client.set_terminated(parent, "KILLED")
            raise SweepInterrupted(
                f"sweep interrupted after {done} finished cell(s) of {len(cells)}: continue with `bioner sweep ... --resume`"
            )
        client.log_metric(parent, "cells_finished", done)
        client.set_terminated(parent, "FINISHED" if done == len(cells) else "FAILED")
        return SweepOutcome(parent, exp_id, uri, len(cells), done)


def _new_parent(client, exp_id: str, cfg: SweepConfig, cells: list[Cell], spath: Path) -> dict:
    from mlflow.entities import Param

    from .tracking import flat_params, git_commit

    parent = client.create_run(
        exp_id,
        run_name=f"sweep-{cfg.experiment}",
        tags={
            "bioner.kind": "sweep",
            "encoder": cfg.encoder,
            "profile": cfg.profile,
            "git_commit": git_commit(),
            "sweep.datasets": ",".join(_dataset_name(d) for d in cfg.dataset_list()),
            "sweep.variants": ",".join(cfg.variants),
            "sweep.baseline": cfg.baseline_variant() or "",
            "sweep.cells": str(len(cells)),
        },
    ).info.run_id
    params = {k: v for k, v in flat_params(TrainConfig(**cfg.base())).items() if k not in SET_BY_SWEEP + ("run_name",)}
    params.update(profile=cfg.profile, seeds=str(cfg.seeds), train_fractions=",".join(f"{f:g}" for f in cfg.fraction_list()))
    client.log_batch(parent, params=[Param(k, v) for k, v in params.items()])
    client.log_dict(parent, {"variants": cfg.variants, "per_dataset": cfg.per_dataset, "cells": [c.key for c in cells]}, "sweep.json")
    spath.parent.mkdir(parents=True, exist_ok=True)
    # The newest sweep of an experiment is the one --resume continues.
    state = {"parent_run_id": parent, "run_dir": str(spath.parent / parent), "cells": [c.key for c in cells]}
    spath.write_text(json.dumps(state))
    return state


def _resume_state(spath: Path, keys: list[str], client) -> dict:
    if not spath.is_file():
        raise BionerError(f"--resume: no sweep to resume under {spath.parent}")
    state = json.loads(spath.read_text())
    if state["cells"] != keys:
        raise ConfigError(f"--resume: the grid differs from the interrupted sweep's ({len(state['cells'])} cells, now {len(keys)}): "
                          "resume with the same config and --set values")
    client.update_run(state["parent_run_id"], status="RUNNING")
    return state


def _place(cfg: SweepConfig, cells: list[Cell]) -> tuple[list[Cell], int]:
    """Cells at once (from the cluster's GPUs or CPUs) and each worker's CPU share."""
    import ray

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
        from .training import default_cpus_per_worker

        cpw = default_cpus_per_worker(TrainConfig(**cfg.base()), conc, TRIAL_CPU)
        cells = [Cell(c.key, c.dataset, c.variant, c.seed, c.train_fraction, {**c.config, "cpus_per_worker": cpw}) for c in cells]
    return cells, conc


def _fit_grid(cells, conc, uri, exp_id, parent, state, out_dir: Path, resume: bool, progress: bool):
    from ray import tune

    trainable = tune.with_resources(sweep_cell, {"cpu": TRIAL_CPU})
    run_dir = Path(state["run_dir"])
    callbacks = [_Progress(len(cells))] if progress else []
    if resume and tune.Tuner.can_restore(str(run_dir)):
        return tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True).fit()
    space = {
        "cell": tune.grid_search([c.key for c in cells]),
        "cells": {c.key: {"key": c.key, "dataset": c.dataset, "variant": c.variant, "seed": c.seed,
                          "train_fraction": c.train_fraction, "config": c.config} for c in cells},
        "tracking_uri": uri,
        "experiment_id": exp_id,
        "parent_run_id": parent,
        "storage": str(run_dir / "cells"),
        "predictions": str(out_dir / "predictions"),
    }
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=conc),
        run_config=tune.RunConfig(name=run_dir.name, storage_path=str(run_dir.parent), verbose=0, callbacks=callbacks),
    )
    return tuner.fit()


def _make_progress_base():
    from ray.tune import Callback

    return Callback


class _Progress(_make_progress_base()):
    """One line per finished cell with the time left, instead of Tune's status tables."""

    def __init__(self, total: int):
        # Tune pickles its callbacks with the run config: plain print, no console object.
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def echo(self, line: str) -> None:
        print(line, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.echo(f"[{self.done}/{self.total}] training {trial.config['cell']}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "FAILED")

    def _line(self, trial, what: str):
        self.done += 1
        el = time.perf_counter() - self.t0
        left = el / self.done * (self.total - self.done)
        f1 = next((v for k, v in (trial.last_result or {}).items() if k.endswith("_f1") and k.count("_") == 1), None)
        score = f", F1 {f1:.4f}" if isinstance(f1, float) else ""
        self.echo(f"[{self.done}/{self.total}] {trial.config['cell']} {what}{score} ({el / 60:.1f} min so far, about {left / 60:.1f} min left)")
