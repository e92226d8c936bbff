import socket
import time

import pytest

from bioner.config import TrainConfig
from bioner.errors import BionerError
from bioner.studies.training import run_training
from bioner.tracking.store import prepare_output_dir
from helpers import save_pyfunc, save_random_model


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


def test_tracking_retries_a_refused_connection_but_not_a_bad_request(tmp_path):
    """Per-epoch metrics outlast a server restart (a refused connection is retried for the window),
    while a request the server rejects, or a bug, fails at once instead of for 10 minutes."""
    from mlflow import MlflowClient

    from bioner.tracking.metrics import log_epoch_metrics, retry

    calls = []

    def refused():
        calls.append(1)
        raise ConnectionRefusedError("server restarting")

    t0 = time.perf_counter()
    with pytest.raises(ConnectionRefusedError):
        retry(refused, window_s=1.2)
    assert len(calls) >= 2 and time.perf_counter() - t0 < 5

    def bug():
        calls.append(1)
        raise TypeError("a bug")

    calls.clear()
    with pytest.raises(TypeError):
        retry(bug, window_s=60)
    assert len(calls) == 1

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("e")
    t0 = time.perf_counter()
    with pytest.raises(Exception, match="(?i)run .*not found|does not exist"):  # a 404 from the store: no retry
        log_epoch_metrics(uri, "0" * 32, {"train_loss": 1.0}, step=1)
    assert time.perf_counter() - t0 < 5

    from mlflow.exceptions import MlflowException

    from bioner.tracking.metrics import transient

    # What MLflow raises once its HTTP client gave up on a server that refuses connections.
    assert transient(
        MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed: Max retries")
    )
    assert not transient(MlflowException.invalid_parameter_value("bad value"))


def test_models_logged_before_the_layered_package_still_load(tmp_path, tiny_bert):
    """Their entry file imports `bioner.pyfunc.BioNERPyfunc`, which must keep working."""
    import mlflow.pyfunc

    folder = save_random_model(tmp_path / "folder", tiny_bert, max_length=64)
    old_entry = tmp_path / "mlflow_model.py"
    old_entry.write_text(
        "import mlflow.models\n\nfrom bioner.pyfunc import BioNERPyfunc\n\nmlflow.models.set_model(BioNERPyfunc())\n"
    )
    loaded = mlflow.pyfunc.load_model(str(save_pyfunc(tmp_path / "old", folder, python_model=old_entry)))
    out = loaded.predict(["Familial cancer ."])
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], list)
