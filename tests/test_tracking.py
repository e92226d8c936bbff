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

