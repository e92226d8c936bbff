import socket
import time

import pytest

from bioner.config import TrainConfig
from bioner.errors import BionerError
from bioner.tracking import prepare_output_dir
from bioner.training import run_training


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_mlflow_server_is_refused_at_once_before_training(tmp_path):
    uri = f"http://127.0.0.1:{_dead_port()}"
    cfg = TrainConfig(tracking_uri=uri, output_dir=str(tmp_path), train_fraction=0.01)
    t0 = time.perf_counter()
    with pytest.raises(BionerError, match=r"tracking_uri http://127\.0\.0\.1:\d+: MLflow server not reachable"):
        run_training(cfg, progress=False)
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "models").exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BionerError, match=r"output_dir .*file.*not writable"):
        prepare_output_dir(str(f))


def test_after_a_resumed_search_no_trial_run_or_study_trial_is_left_running(tmp_path):
    """A driver SIGKILLed seconds after a trial started can leave that trial unknown to Tune's
    saved state; `--resume` samples a new one. The lost trial's MLflow run and Optuna trial are
    closed, and the trials Tune knows are closed by what they logged."""
    import optuna
    from mlflow import MlflowClient

    from bioner.tuning import METRIC, _close_trial_runs, _fail_lost_study_trials

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("t")
    parent = client.create_run(exp).info.run_id

    def trial(tid, epochs_logged):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "bioner.kind": "trial", "ray.trial_id": tid})
        for e in range(1, epochs_logged + 1):
            client.log_metric(run.info.run_id, METRIC, 0.5, step=e)
        return run.info.run_id

    done, cut, lost = trial("a", 2), trial("b", 1), trial("c", 0)
    _close_trial_runs(client, exp, parent, max_epochs=2, known={"a", "b"})
    status = {r: (client.get_run(r).info.status, client.get_run(r).data.tags["stop_reason"]) for r in (done, cut, lost)}
    assert status[done] == ("FINISHED", "completed 2 epochs")
    assert status[cut][0] == "KILLED" and status[cut][1].startswith("ASHA stopped it after epoch 1")
    assert status[lost][0] == "KILLED" and status[lost][1].startswith("lost: the tuning driver was killed")

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # suggested to the trial the killed driver lost
    _fail_lost_study_trials("s", storage)
    assert [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials] == ["COMPLETE", "FAIL"]
