"""A real Ctrl-C of the `bioner tune` driver: the job ends as interrupted, ready for `--resume`.

What `--resume` then does (finished trials are not trained again, the lost one is closed, the
job finishes) is tested after a SIGKILL in tests/faults/test_faults_recovery.py: the same resume."""

import pytest
from mlflow import MlflowClient

from bioner.studies.tags import INTERRUPTED
from helpers import trial_runs_in_store, tune_smoke_args

pytestmark = pytest.mark.usefixtures("no_ray_in_process")


def test_ctrl_c_ends_a_tune_as_interrupted_and_starts_no_refit(tmp_path, make_dataset, tiny_bert):
    """Ctrl-C (SIGINT) the driver while its second trial runs: Ray Tune takes the signal and returns
    normally, and the trial it stopped may count as ended; the job must still end interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = make_dataset("resume")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "bioner.cli", *tune_smoke_args(spec, tiny_bert, out, "resume")]
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

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume").experiment_id
    parent = client.search_runs([exp], "tags.`bioner.kind` = 'tune'")[0]
    assert parent.info.status == "KILLED" and parent.data.tags.get(INTERRUPTED) == "true", parent.data.tags
    assert not client.search_runs([exp], "tags.`bioner.kind` = 'refit'")  # before the fix the refit began
