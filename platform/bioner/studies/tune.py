"""`bioner tune`: Ray Tune + Optuna (TPE) + ASHA over alpha, beta, learning rate and query source.

Each trial is a function trainable that builds and fits its own TorchTrainer (Ray Train V2
cannot be handed to a Tuner), trains on train and reports devel F1 after every epoch through
`TuneReportCallback`. Model selection never looks at test: the best configuration by devel F1 is
refit on train+devel with several seeds and scored on test, and the first seed's refit is registered
(`registered_seed`), whatever the seeds scored.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..data.job import load_job_data
from ..data.queries import Queries
from ..data.specs import Spec
from ..errors import SystemFailure, first_line
from ..tracking.registry import register_challenger
from ..tracking.store import flat_params, git_commit
from ..train.driver import fit, worker_job
from ..train.local_ray import default_cpus_per_worker, ensure_ray
from ..train.preflight import check_job
from . import mlruns
from .setup import OpenStudy, open_study
from .tags import DATASET, ENCODER, GIT_COMMIT, KIND, PARENT, REGISTERED_VERSION, SEARCH_SPACE, TRIAL_ID, Kind
from .training import run_training
from .tune_config import SEARCHED, TuneConfig, points_to_evaluate
from .tuner import fit_or_restore

METRIC = "devel_f1"
COMMAND = "tune"
TRIAL_CPU = 0.01  # the trial function only waits on its trainer: the workers get the cores
# Tags of the parent run, beside REGISTERED_VERSION: which refit seed was registered, and by what rule.
REGISTERED_SEED = "registered_seed"
SELECTION_RULE = "selection_rule"
FIRST_SEED = "first refit seed in configured order (reads no test score)"

R = TypeVar("R")


@dataclass(frozen=True)
class Study:
    """What every trial of one search shares (handed to trials with tune.with_parameters)."""

    cfg: TuneConfig
    dataset: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_dir: Path
    spec: Spec  # the driver's: a trial runs in a folder of its own, where a spec named from the working folder is lost

    @property
    def name(self) -> str:
        return study_name(self.cfg.experiment, self.parent_run_id)


def study_name(experiment: str, parent_run_id: str) -> str:
    """The search's Optuna study, kept in <output_dir>/optuna.db (named in the state file too)."""
    return f"{experiment}-{parent_run_id}"


def tune_trial(config: dict, study: Study) -> None:
    """One Tune trial: an MLflow child run and a TorchTrainer fit reporting devel F1 per epoch."""
    from mlflow import MlflowClient  # lazy (platform/README.md)
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    cfg = study.cfg.trial_config(config)
    client = MlflowClient(study.tracking_uri)
    # A trial restarted by `--resume` keeps its MLflow run (metrics are logged per epoch step).
    run_id, _ = mlruns.open_child(
        client,
        study.experiment_id,
        study.parent_run_id,
        TRIAL_ID,
        trial_id,
        f"trial-{trial_id}",
        {KIND: Kind.TRIAL, DATASET: study.dataset},
        flat_params(cfg),
    )
    logged = [m.step for m in client.get_metric_history(run_id, "train_loss")]  # epochs done before a restart
    # Tune stops a trial's actor when ASHA cuts it and when it has reported its last epoch, which
    # can break off `fit` with an error of Ray's: only the training's own error fails the run here;
    # close_trial_runs ends the others by what they logged.
    job = worker_job(cfg, run_id, study.tracking_uri, progress=False, spec=study.spec)
    result = fit(job, f"trial-{trial_id}", study.run_dir / "trials", callbacks=[TuneReportCallback()])
    if result.error:
        mlruns.finish(client, run_id, "FAILED", f"error: {first_line(result.error, 200)}")
        raise result.error
    if result.metrics and result.metrics.get("epoch", 0) <= max(logged, default=0):
        # Restored by --resume after its last epoch was checkpointed: Ray Train had nothing left
        # to run and reported nothing, so Tune hears the last epoch's metrics from here.
        tune.report(result.metrics)
    mlruns.finish(client, run_id, "FINISHED", f"completed {cfg.epochs} epochs")


@dataclass
class TuneOutcome:
    parent_run_id: str
    best_params: dict
    best_devel_f1: float
    test_f1: list[float]
    model_version: str | None
    refit_metrics: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage: search, refit, register


class TuneInterrupted(mlruns.Interrupted):
    """The search stopped before its budget (Ctrl-C): the state is saved for --resume."""


def run_tune(cfg: TuneConfig, resume: bool = False, progress: bool = True) -> TuneOutcome:
    # Validate everything a trial and a refit will read before anything starts.
    data = load_job_data(cfg.train_config(train_splits=["train"], eval_split="devel"))
    sources = [s for s in cfg.search.query_source if s != "none"]  # beta is searched: a trial may ask any of them
    check_job(
        cfg,
        data.spec,
        [Queries.build(data.spec, s, data.train, cfg.seed, cfg.dictionary_examples) for s in sources] or [None],
    )
    with open_study(cfg, COMMAND, resume, f"tuning job of experiment {cfg.experiment!r}", finished_ok=True) as st:
        return _run(cfg, st, data.spec, progress)


def _run(cfg: TuneConfig, st: OpenStudy, spec: Spec, progress: bool) -> TuneOutcome:
    client, out_dir, uri, exp_id = st.client, st.out_dir, st.tracking_uri, st.experiment_id
    state = st.parent_state(lambda: _start_parent(cfg, st, spec))
    parent = state["parent_run_id"]
    with mlruns.ends_on_error(client, parent, passthrough=(TuneInterrupted,)):
        ensure_ray()
        if cfg.cpus_per_worker is None:
            cfg = cfg.model_copy(
                update={"cpus_per_worker": default_cpus_per_worker(cfg, cfg.max_concurrent_trials, TRIAL_CPU)}
            )
        study = Study(cfg, spec.name, uri, exp_id, parent, Path(state["run_dir"]), spec)
        t0 = time.perf_counter()
        results = _fit_tuner(study, out_dir, st.resumed is not None)
        search_s = time.perf_counter() - t0
        mlruns.end_if_interrupted(
            client,
            parent,
            results,
            cfg.num_samples,
            TuneInterrupted(
                f"tuning interrupted after {results.num_terminated} finished trial(s) of {cfg.num_samples}: "
                f"continue with `bioner tune ... --resume`"
            ),
        )
        close_trial_runs(client, exp_id, parent, cfg.max_epochs, {r.metrics.get("trial_id") for r in results})
        fail_lost_study_trials(study.name, _study_storage(out_dir))
        best = results.get_best_result(METRIC, "max", scope="last")
        if best is None or best.metrics is None or METRIC not in best.metrics:
            raise SystemFailure("no trial reported devel_f1: see the trial runs in MLflow for their errors")
        best_params = {k: best.config[k] for k in SEARCHED}
        best_f1 = float(best.metrics[METRIC])
        client.log_metric(parent, "best_devel_f1", best_f1)
        mlruns.log_params(client, parent, {f"best_{k}": v for k, v in best_params.items()})
        _log_study_plots(client, parent, study.name, _study_storage(out_dir))
        outcome = _refit_and_register(cfg, client, parent, best_params, best_f1, spec, progress)
        outcome.seconds = {"search": search_s, **outcome.seconds}
        client.set_terminated(parent, "FINISHED")
        return outcome


def _start_parent(cfg: TuneConfig, st: OpenStudy, spec: Spec) -> tuple[str, dict]:
    """A new tuning job's parent run, and its state."""
    tags = {
        KIND: Kind.TUNE,
        DATASET: spec.name,
        ENCODER: cfg.encoder,
        GIT_COMMIT: git_commit(),
        SEARCH_SPACE: cfg.search.model_dump_json(),
    }
    params = {k: v for k, v in flat_params(cfg).items() if k != "search"}
    run_id = mlruns.start_parent(st.client, st.experiment_id, f"tune-{spec.name}", tags, params)
    return run_id, {
        "parent_run_id": run_id,
        "run_dir": str(st.run_dir(run_id)),
        "study_name": study_name(cfg.experiment, run_id),
    }


def _study_storage(out_dir: Path) -> str:
    return f"sqlite:///{out_dir / 'optuna.db'}"


def _fit_tuner(study: Study, out_dir: Path, resume: bool):
    import optuna  # lazy (platform/README.md)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = tune.with_resources(tune.with_parameters(tune_trial, study=study), {"cpu": TRIAL_CPU})
    cfg, s = study.cfg, study.cfg.search

    def build():
        space = {
            "alpha": optuna.distributions.FloatDistribution(*s.alpha),
            "beta": optuna.distributions.FloatDistribution(*s.beta),
            "learning_rate": optuna.distributions.FloatDistribution(*s.learning_rate, log=True),
            "query_source": optuna.distributions.CategoricalDistribution(list(s.query_source)),
        }
        searcher = OptunaSearch(
            space,
            metric=METRIC,
            mode="max",
            points_to_evaluate=points_to_evaluate(s),
            sampler=optuna.samplers.TPESampler(seed=cfg.seed),
            study_name=study.name,
            storage=optuna.storages.RDBStorage(_study_storage(out_dir)),
        )
        scheduler = ASHAScheduler(
            metric=METRIC,
            mode="max",
            time_attr="epoch",
            max_t=cfg.max_epochs,
            grace_period=min(cfg.grace_period, cfg.max_epochs),
            reduction_factor=2,
        )
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=cfg.num_samples,
                max_concurrent_trials=cfg.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(name=study.run_dir.name, storage_path=str(study.run_dir.parent), verbose=1),
        )

    return fit_or_restore(study.run_dir, trainable, resume, build)


def close_trial_runs(client, exp_id: str, parent: str, max_epochs: int, known: set[str]) -> None:
    """Close the MLflow runs of trials that Tune ended from outside the trial function.

    Tune stops a trial's actor when ASHA cuts it at a rung and also when it reports its last
    epoch, so the trial function may never reach its own `set_terminated`. A run whose trial is
    not in `known` (the trials of the finished search) belongs to a trial that had started when
    the driver was killed but that Tune had not yet saved (it saves its state every 10 s or
    more); `--resume` sampled a new trial in its place.
    """
    for r in client.search_runs([exp_id], f"tags.`{PARENT}` = '{parent}' and tags.`{KIND}` = '{Kind.TRIAL}'"):
        if r.info.status != "RUNNING":
            continue
        hist = client.get_metric_history(r.info.run_id, METRIC)
        last = max(hist, key=lambda m: m.step) if hist else None
        if r.data.tags.get(TRIAL_ID) not in known:
            reason, status = (
                "lost: the tuning driver was killed before Tune saved this trial; --resume sampled a new one",
                "KILLED",
            )
        elif last is None:
            reason, status = "stopped before its first evaluation", "KILLED"
        elif last.step >= max_epochs:
            reason, status = f"completed {max_epochs} epochs", "FINISHED"
        else:
            reason = f"ASHA stopped it after epoch {last.step} ({METRIC} {last.value:.4f} below its rung's cutoff)"
            status = "KILLED"
        mlruns.finish(client, r.info.run_id, status, reason)


def fail_lost_study_trials(study_name: str, storage: str) -> None:
    """Once the search is over no Optuna trial runs: one still RUNNING was lost with a killed driver."""
    import optuna  # lazy (platform/README.md)

    study = optuna.load_study(study_name=study_name, storage=storage)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _log_study_plots(client, parent: str, study_name: str, storage: str) -> None:
    import matplotlib  # lazy (platform/README.md)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = optuna.load_study(study_name=study_name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = {"optuna_history.png": ovm.plot_optimization_history}
    if len(done) >= 2:
        plots["optuna_importances.png"] = ovm.plot_param_importances
    with tempfile.TemporaryDirectory() as d:
        for name, fn in plots.items():
            try:
                ax = fn(study)
            except (ValueError, RuntimeError) as e:  # importances need variation across trials
                client.set_tag(parent, f"plot_skipped.{name}", str(e)[:200])
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(Path(d) / name, dpi=100)
            plt.close(fig)
            client.log_artifact(parent, str(Path(d) / name), "plots")


def registered_seed(results: Sequence[tuple[int, R]]) -> tuple[int, R]:
    """The refit to register, of (seed, result) pairs in configured seed order: the first seed's.

    The rule reads no score, so the registered version's test F1 is an unbiased draw from the
    seeds' spread rather than its maximum, and the promotion gate's test comparison stays fair.
    """
    if not results:
        raise ValueError("no refit to register")
    return results[0]


def _log_test_scores(client, parent: str, scores: dict[int, float]) -> tuple[float, float]:
    """Test F1 per seed, and its mean and sd, on the parent run: reported, never used to choose."""
    values = list(scores.values())
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    client.log_metric(parent, "test_f1_mean", mean)
    client.log_metric(parent, "test_f1_sd", sd)
    for seed, f1 in scores.items():
        client.log_metric(parent, f"test_f1_seed_{seed}", f1)
    return mean, sd


def _refit_and_register(
    cfg: TuneConfig, client, parent: str, best: dict, best_f1: float, spec: Spec, progress: bool
) -> TuneOutcome:
    t0 = time.perf_counter()
    results = []
    for k in range(cfg.refit_seeds):
        seed = cfg.seed + k
        res = run_training(
            cfg.refit_config(best, seed), progress=progress, parent_run_id=parent, tags={KIND: Kind.REFIT}, spec=spec
        )
        results.append((seed, res))
    scores = [r.metrics["test_f1"] for _, r in results]
    mean, sd = _log_test_scores(client, parent, {seed: r.metrics["test_f1"] for seed, r in results})
    seconds = {"refit": time.perf_counter() - t0}
    t0 = time.perf_counter()
    version = None
    if cfg.register:
        seed, chosen = registered_seed(results)
        desc = (
            f"Tuning job {parent} (experiment {cfg.experiment}). Best devel F1 {best_f1:.4f} with "
            + ", ".join(f"{k}={v}" for k, v in best.items())
            + f". Refit on train+devel, test F1 {mean:.4f} +/- {sd:.4f} over {len(scores)} seed(s) "
            + f"({', '.join(f'{s:.4f}' for s in scores)}); this version is seed {seed}, the {FIRST_SEED}. "
            + f"Config: {json.dumps({**cfg.train_config().model_dump(), **best, 'epochs': cfg.max_epochs})}"
        )
        version = register_challenger(
            client, spec, chosen.model_uri, desc, {"parent_run_id": parent, "devel_f1": f"{best_f1:.4f}"}
        )
        client.set_tag(parent, REGISTERED_VERSION, version)
        client.set_tag(parent, REGISTERED_SEED, str(seed))
        client.set_tag(parent, SELECTION_RULE, FIRST_SEED)
        seconds["register"] = time.perf_counter() - t0
    return TuneOutcome(parent, best, best_f1, scores, version, [r.metrics for _, r in results], seconds)
