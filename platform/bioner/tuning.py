"""Ray Tune + Optuna (TPE) + ASHA over alpha, beta, learning rate and query source.

Each trial is a function trainable that builds and fits its own TorchTrainer (Ray Train V2
cannot be handed to a Tuner), trains on train and reports devel F1 after every epoch through
`TuneReportCallback`. Model selection never looks at test: the best configuration is then refit
on train+devel with several seeds and scored on test, and the best seed is registered.
"""

from __future__ import annotations

import json
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .config import QuerySource, TrainConfig
from .errors import BionerError

METRIC = "devel_f1"
SEARCHED = ("alpha", "beta", "learning_rate", "query_source")
STATE_FILE = "bioner_tune.json"
TRIAL_CPU = 0.01  # the trial function only waits on its trainer: the workers get the cores


class SearchSpace(BaseModel):
    """Ranges searched by Optuna. alpha, beta: uniform; learning_rate: log-uniform."""

    model_config = ConfigDict(extra="forbid")
    alpha: tuple[float, float] = Field((0.0, 1.0), description="[low, high] of the NER loss weight")
    beta: tuple[float, float] = Field((0.0, 1.0), description="[low, high] of the MRC loss weight")
    learning_rate: tuple[float, float] = Field((1e-5, 5e-5), description="[low, high], sampled log-uniform")
    query_source: list[QuerySource] = Field(
        ["none", "wikipedia", "annotation", "dictionary", "random"], min_length=1, description="query sources to try"
    )

    @model_validator(mode="after")
    def _check(self):
        for k in ("alpha", "beta"):
            lo, hi = getattr(self, k)
            if not 0 <= lo <= hi <= 1:
                raise ValueError(f"{k}: need 0 <= low <= high <= 1, got [{lo}, {hi}]")
        if self.alpha[1] == 0 and self.beta[1] == 0:
            raise ValueError("alpha and beta ranges are both [0, 0]: alpha + beta must be > 0")
        lo, hi = self.learning_rate
        if not 0 < lo <= hi:
            raise ValueError(f"learning_rate: need 0 < low <= high, got [{lo}, {hi}]")
        return self

    def contains(self, point: dict) -> bool:
        return (
            all(getattr(self, k)[0] <= point[k] <= getattr(self, k)[1] for k in ("alpha", "beta", "learning_rate"))
            and point["query_source"] in self.query_source
        )


# `register` is the config key users write; on the class it hides ABCMeta.register, which pydantic
# models inherit and nothing here calls, so pydantic's warning about it says nothing to a user.
warnings.filterwarnings("ignore", message='Field name "register" in "TuneConfig" shadows', category=UserWarning)


class TuneConfig(TrainConfig):
    """A training config plus the budget of the search. `bioner train` on it trains the base values."""

    num_samples: int = Field(8, ge=1, description="trials in the search (the paper and baseline points count)")
    max_concurrent_trials: int = Field(1, ge=1, description="trials at once; each takes num_workers x cpus_per_worker")
    max_epochs: int = Field(3, ge=1, description="epochs of a trial that is not stopped early, and of each refit")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial can be stopped")
    refit_seeds: int = Field(3, ge=1, description="seeds of the train+devel refit of the best configuration")
    search: SearchSpace = Field(default_factory=SearchSpace, description="the search space")
    register: bool = Field(True, description="register the best refit model as bioner-<dataset> with alias challenger")

    def base(self) -> dict:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.model_fields}).model_dump()


def points_to_evaluate(space: SearchSpace) -> list[dict]:
    """The paper's setting and the single-task baseline, when the space contains them."""
    pts = [
        {"alpha": 1.0, "beta": 1.0, "learning_rate": 3e-5, "query_source": "annotation"},
        {"alpha": 1.0, "beta": 0.0, "learning_rate": 3e-5, "query_source": "none"},
    ]
    out = []
    for p in pts:
        q = dict(p)
        if not space.contains(q):  # clip into the space instead of dropping the idea
            q["learning_rate"] = min(max(q["learning_rate"], space.learning_rate[0]), space.learning_rate[1])
            if q["query_source"] not in space.query_source:
                q["query_source"] = space.query_source[0]
        if space.contains(q):
            out.append(q)
    return out


def trial_config(base: dict, params: dict, max_epochs: int) -> TrainConfig:
    """A trial trains on train and scores devel after every epoch: test is never looked at."""
    return TrainConfig(
        **{**base, **{k: params[k] for k in SEARCHED}},
    ).model_copy(update={"epochs": max_epochs, "train_splits": ["train"], "eval_split": "devel", "eval_every_epoch": True})


def tune_trial(config: dict) -> None:
    """One Tune trial: an MLflow child run and a TorchTrainer fit reporting devel F1 per epoch."""
    from mlflow import MlflowClient
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .tracking import flat_params, git_commit
    from .training import fit

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(config["base"], config, config["max_epochs"])
    client = MlflowClient(config["tracking_uri"])
    # A trial restarted by `--resume` keeps its MLflow run (metrics are logged per epoch step).
    found = client.search_runs(
        [config["experiment_id"]],
        f"tags.mlflow.parentRunId = '{config['parent_run_id']}' and tags.`ray.trial_id` = '{trial_id}'",
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(
            config["experiment_id"],
            run_name=f"trial-{trial_id}",
            tags={
                "mlflow.parentRunId": config["parent_run_id"],
                "bioner.kind": "trial",
                "ray.trial_id": trial_id,
                "dataset": config["dataset"],
                "git_commit": git_commit(),
            },
        ).info.run_id
        client.log_batch(run_id, params=[_param(k, v) for k, v in flat_params(cfg).items()])
    storage = Path(config["storage"])
    logged = [m.step for m in client.get_metric_history(run_id, "train_loss")]  # epochs done before a restart
    result = fit(cfg, run_id, config["tracking_uri"], storage, f"trial-{trial_id}", callbacks=[TuneReportCallback()], progress=False)
    if not result.error and result.metrics and result.metrics.get("epoch", 0) <= max(logged, default=0):
        # Restored by --resume after its last epoch was checkpointed: Ray Train had nothing left
        # to run and reported nothing, so Tune hears the last epoch's metrics from here.
        tune.report(result.metrics)
    if result.error:
        client.set_tag(run_id, "stop_reason", f"error: {str(result.error).splitlines()[0][:200]}")
        client.set_terminated(run_id, "FAILED")
        raise result.error
    client.set_tag(run_id, "stop_reason", f"completed {cfg.epochs} epochs")
    client.set_terminated(run_id, "FINISHED")


def _param(k, v):
    from mlflow.entities import Param

    return Param(k, str(v))


@dataclass
class TuneOutcome:
    parent_run_id: str
    best_params: dict
    best_devel_f1: float
    test_f1: list[float]
    model_version: str | None
    refit_metrics: list[dict]


def _state_path(out_dir: Path, experiment: str) -> Path:
    return out_dir / "tune" / experiment / STATE_FILE


def run_tune(cfg: TuneConfig, resume: bool = False, progress: bool = True) -> TuneOutcome:
    from mlflow import MlflowClient

    from . import tracking
    from .data import load_job_data
    from .training import ensure_ray

    # Validate everything a trial and a refit will read before anything starts.
    data = load_job_data(TrainConfig(**cfg.base()).model_copy(update={"train_splits": ["train"], "eval_split": "devel"}))
    out_dir = tracking.prepare_output_dir(cfg.output_dir)
    uri = cfg.resolved_tracking_uri()
    exp_id = tracking.use_experiment(uri, cfg.experiment, out_dir)
    client = MlflowClient(uri)
    state_path = _state_path(out_dir, cfg.experiment)
    tune_dir = state_path.parent

    if resume:
        if not state_path.is_file():
            raise BionerError(f"--resume: no tuning job to resume under {tune_dir}")
        state = json.loads(state_path.read_text())
        parent = state["parent_run_id"]
        client.update_run(parent, status="RUNNING")
    else:
        parent = client.create_run(
            exp_id,
            run_name=f"tune-{data.spec.name}",
            tags={
                "bioner.kind": "tune",
                "dataset": data.spec.name,
                "encoder": cfg.encoder,
                "git_commit": tracking.git_commit(),
                "search_space": cfg.search.model_dump_json(),
            },
        ).info.run_id
        client.log_batch(parent, params=[_param(k, v) for k, v in tracking.flat_params(cfg).items() if k != "search"])
        tune_dir.mkdir(parents=True, exist_ok=True)
        # The newest job of an experiment is the one --resume continues.
        state = {"parent_run_id": parent, "study_name": f"{cfg.experiment}-{parent}", "run_dir": str(tune_dir / parent)}
        state_path.write_text(json.dumps(state))

    with tracking.ends_on_error(client, parent, passthrough=(TuneInterrupted,)):
        ensure_ray()
        if cfg.cpus_per_worker is None:
            from .training import default_cpus_per_worker

            cfg = cfg.model_copy(update={"cpus_per_worker": default_cpus_per_worker(cfg, cfg.max_concurrent_trials, TRIAL_CPU)})
        results = _fit_tuner(cfg, data.spec.name, uri, exp_id, parent, state, out_dir, resume)
        if results.num_terminated + results.num_errors < cfg.num_samples:
            client.set_tag(parent, "interrupted", "true")
            client.set_terminated(parent, "KILLED")
            raise TuneInterrupted(
                f"tuning interrupted after {results.num_terminated} finished trial(s) of {cfg.num_samples}: "
                f"continue with `bioner tune ... --resume`"
            )
        _close_trial_runs(client, exp_id, parent, cfg.max_epochs, {r.metrics.get("trial_id") for r in results})
        _fail_lost_study_trials(state["study_name"], _study_storage(out_dir))
        best = results.get_best_result(METRIC, "max", scope="last")
        if best is None or best.metrics is None or METRIC not in best.metrics:
            raise BionerError("no trial reported devel_f1: see the trial runs in MLflow for their errors")
        best_params = {k: best.config[k] for k in SEARCHED}
        best_f1 = float(best.metrics[METRIC])
        client.log_metric(parent, "best_devel_f1", best_f1)
        client.log_batch(parent, params=[_param(f"best_{k}", v) for k, v in best_params.items()])
        _log_study_plots(client, parent, state["study_name"], _study_storage(out_dir))
        outcome = _refit_and_register(cfg, client, parent, best_params, best_f1, data.spec.name, progress)
        client.set_terminated(parent, "FINISHED")
        return outcome


def _study_storage(out_dir: Path) -> str:
    return f"sqlite:///{out_dir / 'optuna.db'}"


class TuneInterrupted(BionerError):
    """The search stopped before its budget (Ctrl-C): the state is saved for --resume."""


def _fit_tuner(cfg: TuneConfig, dataset: str, uri: str, exp_id: str, parent: str, state: dict, out_dir: Path, resume: bool):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = tune.with_resources(tune_trial, {"cpu": TRIAL_CPU})
    run_dir = Path(state["run_dir"])
    if resume and tune.Tuner.can_restore(str(run_dir)):
        return tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True).fit()

    s = cfg.search
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
        study_name=state["study_name"],
        storage=optuna.storages.RDBStorage(_study_storage(out_dir)),
    )
    scheduler = ASHAScheduler(metric=METRIC, mode="max", time_attr="epoch", max_t=cfg.max_epochs, grace_period=min(cfg.grace_period, cfg.max_epochs), reduction_factor=2)
    tuner = tune.Tuner(
        trainable,
        param_space={
            "base": cfg.base(),
            "max_epochs": cfg.max_epochs,
            "tracking_uri": uri,
            "experiment_id": exp_id,
            "parent_run_id": parent,
            "dataset": dataset,
            "storage": str(run_dir / "trials"),
        },
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(name=run_dir.name, storage_path=str(run_dir.parent), verbose=1),
    )
    return tuner.fit()


def _close_trial_runs(client, exp_id: str, parent: str, max_epochs: int, known: set[str]) -> None:
    """Close the MLflow runs of trials that Tune ended from outside the trial function.

    Tune stops a trial's actor when ASHA cuts it at a rung and also when it reports its last
    epoch, so the trial function may never reach its own `set_terminated`. A run whose trial is
    not in `known` (the trials of the finished search) belongs to a trial that had started when
    the driver was killed but that Tune had not yet saved (it saves its state every 10 s or
    more); `--resume` sampled a new trial in its place.
    """
    runs = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}' and tags.`bioner.kind` = 'trial'")
    for r in runs:
        if r.info.status != "RUNNING":
            continue
        hist = client.get_metric_history(r.info.run_id, METRIC)
        last = max(hist, key=lambda m: m.step) if hist else None
        if r.data.tags.get("ray.trial_id") not in known:
            reason, status = "lost: the tuning driver was killed before Tune saved this trial; --resume sampled a new one", "KILLED"
        elif last is None:
            reason, status = "stopped before its first evaluation", "KILLED"
        elif last.step >= max_epochs:
            reason, status = f"completed {max_epochs} epochs", "FINISHED"
        else:
            reason = f"ASHA stopped it after epoch {last.step} ({METRIC} {last.value:.4f} below its rung's cutoff)"
            status = "KILLED"
        client.set_tag(r.info.run_id, "stop_reason", reason)
        client.set_terminated(r.info.run_id, status)


def _fail_lost_study_trials(study_name: str, storage: str) -> None:
    """Once the search is over no Optuna trial runs: one still RUNNING was lost with a killed driver."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _log_study_plots(client, parent: str, study_name: str, storage: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = optuna.load_study(study_name=study_name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = {"optuna_history.png": ovm.plot_optimization_history}
    if len(done) >= 2:
        plots["optuna_importances.png"] = ovm.plot_param_importances
    import tempfile

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


def _refit_and_register(cfg: TuneConfig, client, parent: str, best: dict, best_f1: float, dataset: str, progress: bool) -> TuneOutcome:
    from .training import run_training

    results = []
    for k in range(cfg.refit_seeds):
        seed = cfg.seed + k
        rc = TrainConfig(**{**cfg.base(), **best}).model_copy(
            update={"epochs": cfg.max_epochs, "seed": seed, "train_splits": ["train", "devel"], "eval_split": "test",
                    "eval_every_epoch": False, "run_name": f"refit-seed{seed}"}
        )
        res = run_training(rc, progress=progress, parent_run_id=parent, tags={"bioner.kind": "refit"})
        results.append((seed, res))
    scores = [r.metrics["test_f1"] for _, r in results]
    mean = statistics.fmean(scores)
    sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
    client.log_metric(parent, "test_f1_mean", mean)
    client.log_metric(parent, "test_f1_sd", sd)
    for seed, r in results:
        client.log_metric(parent, f"test_f1_seed_{seed}", r.metrics["test_f1"])
    best_seed, best_res = max(results, key=lambda x: x[1].metrics["test_f1"])
    version = None
    if cfg.register:
        from .registry import register_challenger

        desc = (
            f"Tuning job {parent} (experiment {cfg.experiment}). Best devel F1 {best_f1:.4f} with "
            + ", ".join(f"{k}={v}" for k, v in best.items())
            + f". Refit on train+devel, test F1 {mean:.4f} +/- {sd:.4f} over {len(scores)} seed(s) "
            + f"({', '.join(f'{s:.4f}' for s in scores)}); this version is seed {best_seed}. "
            + f"Config: {json.dumps({**cfg.base(), **best, 'epochs': cfg.max_epochs})}"
        )
        version = register_challenger(client, dataset, best_res.model_uri, desc, {"parent_run_id": parent, "devel_f1": f"{best_f1:.4f}"})
        client.set_tag(parent, "registered_version", version)
    return TuneOutcome(parent, best, best_f1, scores, version, [r.metrics for _, r in results])
