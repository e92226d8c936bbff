"""Issue 31, bug 1: a spec given by name that only the starting folder's `experiments/datasets` holds.

The driver finds it there. Ray's processes (Tune trials, sweep cells, Ray Train workers) run in the
folder the local Ray started in, where that name finds nothing, so they must train on the spec the
driver resolved. Real train, tune and sweep on the session's Ray, with a SQLite store.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from bioner.config import TrainConfig, load_config
from helpers import EXPERIMENTS, synthetic_corpus, write_spec

pytestmark = pytest.mark.usefixtures("ray_local")

SMALL = ["train_fraction=1.0", "max_length=48", "batch_size=8", "beta=0"]


@pytest.fixture
def here(tmp_path, monkeypatch, ray_local):
    """The working folder holding `my-spec`, made the driver's folder; Ray's workers are elsewhere."""
    work = tmp_path / "work"
    synthetic_corpus(work / "experiments" / "corpora" / "mine", sizes=(16, 8, 8))
    write_spec(work / "experiments" / "datasets" / "my-spec.yaml", "../corpora/mine", name="my-spec")
    monkeypatch.delenv("BIONER_DATASETS", raising=False)
    monkeypatch.chdir(work)

    def found_by_name() -> str:
        from bioner.data.specs import load_spec

        return str(load_spec("my-spec").path)

    with pytest.raises(ray_local.exceptions.RayTaskError, match="my-spec"):  # else the test would prove nothing
        ray_local.get(ray_local.remote(found_by_name).remote())
    return work


def _finished(uri: str, experiment: str, kind: str | None) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("bioner.kind") == kind]
    return [r for r in runs if r.info.status == "FINISHED"]


def test_a_training_job_trains_on_the_spec_the_driver_found(here, tiny_bert):
    from bioner.studies.training import run_training

    sets = ["dataset=my-spec", f"encoder={tiny_bert}", f"output_dir={here / 'out'}", "experiment=by-name", *SMALL]
    cfg = load_config(TrainConfig, None, [*sets, "epochs=1", "train_splits=[train]"])
    res = run_training(cfg, progress=False)
    assert "test_f1" in res.metrics
    (run,) = _finished(cfg.resolved_tracking_uri(), "by-name", None)  # a plain train run has no kind
    assert run.info.run_id == res.run_id


def test_a_tune_trial_and_its_refit_train_on_the_spec_the_driver_found(here, tiny_bert):
    from bioner.studies.tune import run_tune
    from bioner.studies.tune_config import TuneConfig

    sets = ["dataset=my-spec", f"encoder={tiny_bert}", f"output_dir={here / 'out'}", "experiment=by-name", *SMALL]
    sets += ["num_samples=1", "max_epochs=1", "refit_seeds=1", "register=false"]
    cfg = load_config(TuneConfig, EXPERIMENTS / "tune-smoke.yaml", sets)
    res = run_tune(cfg, progress=False)
    assert len(res.test_f1) == 1
    assert len(_finished(cfg.resolved_tracking_uri(), "by-name", "trial")) == 1
    assert len(_finished(cfg.resolved_tracking_uri(), "by-name", "refit")) == 1


def test_a_sweep_cell_trains_on_the_spec_the_driver_found(here, tiny_bert):
    from bioner.studies.sweep import run_sweep
    from bioner.studies.sweep_config import SweepConfig

    sets = ["dataset=my-spec", f"encoder={tiny_bert}", f"output_dir={here / 'out'}", "experiment=by-name", *SMALL]
    sets += ["seeds=1", "epochs=1", "variants={single: {beta: 0}}"]
    cfg = load_config(SweepConfig, None, sets)
    res = run_sweep(cfg, progress=False)
    assert (res.cells, res.finished) == (1, 1)
