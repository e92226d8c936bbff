"""Resume: a real Ctrl-C of the `bioner tune` driver, then `--resume`."""

import pytest
from mlflow import MlflowClient

from helpers import EXPERIMENTS, trial_runs_in_store

pytestmark = pytest.mark.usefixtures("no_ray_in_process")


def test_an_interrupted_tune_resumes_without_losing_a_finished_trial(tmp_path, make_dataset, tiny_bert):
    """Ctrl-C (SIGINT) the driver after one trial has finished, then `bioner tune --resume`."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = make_dataset("resume")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "bioner.cli", "tune", str(EXPERIMENTS / "tune-smoke.yaml"), "-q",
            "--set", f"dataset={spec}", "--set", f"encoder={tiny_bert}", "--set", f"output_dir={out}",
            "--set", "experiment=resume", "--set", "train_fraction=1.0", "--set", "num_samples=2",
            "--set", "max_epochs=1", "--set", "refit_seeds=1", "--set", "max_length=48", "--set", "register=false"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    uri = f"sqlite:///{out / 'mlflow.db'}"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    runs = []
    deadline = time.time() + 300
    # With one trial at a time, a second trial's run exists only once Tune has recorded the first as done.
    while time.time() < deadline and proc.poll() is None and len(runs) < 2:
        time.sleep(1)
        runs = trial_runs_in_store(out / "mlflow.db", "resume")
    assert len(runs) >= 2 and proc.poll() is None, "the search did not reach its second trial in time"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--resume" in err, err[-2000:]
    first_run, first = runs[0]

    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume").experiment_id
    trials = client.search_runs([exp], "tags.`bioner.kind` = 'trial'")
    ids = [t.data.tags["ray.trial_id"] for t in trials]
    assert len(ids) == 2 and len(set(ids)) == 2 and first in ids
    assert len(client.get_metric_history(first_run, "devel_f1")) == 1  # the finished trial was not trained again
    parents = client.search_runs([exp], "tags.`bioner.kind` = 'tune'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
