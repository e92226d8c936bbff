"""A real (small) search: Ray Tune + Optuna + ASHA, nested MLflow runs, refit, registry."""

import json

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from bioner.cli import app
from bioner.config import load_config
from bioner.studies.tune import run_tune
from bioner.studies.tune_config import SearchSpace, TuneConfig, points_to_evaluate
from helpers import EXPERIMENTS

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def tuned(make_dataset, tiny_bert):
    spec = make_dataset("synth", sizes=(64, 24, 40))
    d = spec.parent
    cfg = load_config(
        TuneConfig,
        EXPERIMENTS / "tune-smoke.yaml",
        [
            f"dataset={spec}",
            f"encoder={tiny_bert}",
            f"output_dir={d / 'out'}",
            "experiment=tune-test",
            "train_fraction=1.0",
            "num_samples=2",
            "max_epochs=2",
            "refit_seeds=2",
            "batch_size=16",
            "max_length=64",
            "learning_rate=1e-3",
            "search.learning_rate=[5.0e-4, 2.0e-3]",
            "max_concurrent_trials=2",  # tiny trials are bound by process start-up, single-threaded: both at once
        ],
    )
    return cfg, run_tune(cfg, progress=False)


def test_points_to_evaluate_start_from_the_paper_and_the_baseline():
    pts = points_to_evaluate(SearchSpace())
    assert pts[0] == {"alpha": 1.0, "beta": 1.0, "learning_rate": 3e-5, "query_source": "annotation"}
    assert pts[1]["beta"] == 0.0


def test_tune_writes_parent_trial_and_refit_runs(tuned):
    cfg, res = tuned
    client = MlflowClient(cfg.resolved_tracking_uri())
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED"
    for tag in ("dataset", "encoder", "git_commit", "search_space"):
        assert tag in parent.data.tags
    assert json.loads(parent.data.tags["search_space"])["learning_rate"] == [5e-4, 2e-3]
    m = parent.data.metrics
    assert {"best_devel_f1", "test_f1_mean", "test_f1_sd", "test_f1_seed_42", "test_f1_seed_43"} <= set(m)
    assert m["test_f1_mean"] == pytest.approx(sum(res.test_f1) / 2)
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    trials = [r for r in children if r.data.tags.get("bioner.kind") == "trial"]
    refits = [r for r in children if r.data.tags.get("bioner.kind") == "refit"]
    assert len(trials) == 2 and len(refits) == 2
    for r in trials:
        assert r.info.status in ("FINISHED", "KILLED") and r.data.tags.get("stop_reason")
        assert {"alpha", "beta", "learning_rate", "query_source"} <= set(r.data.params)
        assert r.data.params["eval_split"] == "devel" and r.data.params["train_splits"] == "train"
        hist = client.get_metric_history(r.info.run_id, "devel_f1")
        assert 1 <= len(hist) <= 2 and "test_f1" not in r.data.metrics  # trials never see test
    # the search started from the paper's point and the single-task baseline
    betas = sorted(float(r.data.params["beta"]) for r in trials)
    assert betas[0] == 0.0 and 1.0 in betas
    for r in refits:
        assert r.data.params["train_splits"] == "train,devel" and "test_f1" in r.data.metrics
    arts = [a.path for a in client.list_artifacts(res.parent_run_id, "plots")]
    assert "plots/optuna_history.png" in arts


def test_best_refit_is_registered_as_challenger(tuned):
    cfg, res = tuned
    client = MlflowClient(cfg.resolved_tracking_uri())
    mv = client.get_model_version_by_alias("bioner-synth", "challenger")
    assert str(mv.version) == res.model_version
    assert "devel F1" in mv.description and res.parent_run_id in mv.description and "+/-" in mv.description


def test_runs_compare_prints_trials_best_first(tuned):
    cfg, _ = tuned
    r = CliRunner().invoke(
        app, ["runs", "compare", "--experiment", "tune-test", "--tracking-uri", cfg.resolved_tracking_uri()]
    )
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if "trial-" in line]
    assert len(rows) == 2
    f1s = [float(x) for row in rows for x in row.split("│")[2:3] if x.strip() not in ("-", "")]
    assert f1s == sorted(f1s, reverse=True)


def test_optuna_study_persists_next_to_the_store(tuned):
    import optuna

    cfg, res = tuned
    from pathlib import Path

    storage = f"sqlite:///{Path(cfg.output_dir) / 'optuna.db'}"
    study = optuna.load_study(study_name=f"tune-test-{res.parent_run_id}", storage=storage)
    assert len([t for t in study.trials if t.state.is_finished()]) >= 1
