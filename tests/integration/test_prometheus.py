"""A real Prometheus scrapes a real short training run: every metric the Grafana dashboard
queries must exist there, with the run's MLflow id and dataset as labels."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests
import yaml

from bioner.train.live_metrics import NAMES
from helpers import REPO

pytestmark = pytest.mark.usefixtures("no_ray_in_process")
GRAFANA = REPO / "dashboards" / "grafana"

TRAIN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from mlflow import MlflowClient
    from bioner.config import TrainConfig
    from bioner.train.driver import fit, worker_job
    from bioner.train.local_ray import start_local_ray

    spec, encoder, out, port = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    # Ray serves every worker's metrics on this port; report them every 0.5 s, not every 10 s.
    start_local_ray(num_cpus=2, _metrics_export_port=port, _system_config={"metrics_report_interval_ms": 500},
                    log_to_driver=False)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("prom")).info.run_id
    cfg = TrainConfig(dataset=spec, encoder=encoder, epochs=2, batch_size=8, max_length=48, train_splits=["train"],
                      eval_split="devel", eval_every_epoch=True, output_dir=str(out))
    result = fit(worker_job(cfg, run_id, uri, progress=False), "prom", out / "ray")
    print("RUN", run_id, "ERROR" if result.error else "OK", flush=True)
    sys.stdin.readline()  # keep Ray (and its metrics agent) up until the test has looked
""")


def _prometheus() -> str:
    exe = shutil.which("prometheus")
    if exe:
        return exe
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    exe = shutil.which("prometheus")
    if not exe:
        pytest.skip(f"Debian's prometheus could not be installed with apt-get: {r.stderr.strip().splitlines()[-1:]}")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_metrics() -> set[str]:
    """Every Prometheus metric name in the dashboard JSON (panel queries and variables)."""
    text = (GRAFANA / "dashboards" / "bioner_training.json").read_text()
    json.loads(text)
    return set(re.findall(r"\bray_bioner_[a-z0-9_]+\b", text))


def test_dashboard_queries_every_exported_metric():
    queried = dashboard_metrics()
    for key, name in NAMES.items():
        suffix = {"sentences": "_total", "step_seconds": "_bucket"}.get(key, "")
        assert f"ray_{name}{suffix}" in queried, f"no panel shows {name}"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "bioner.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "$BIONER_DASHBOARDS"


def _start_prometheus(tmp_path, targets: list[str]):
    """The shipped scrape config, pointed at a service-discovery file in Ray's format."""
    sd = tmp_path / "prom_metrics_service_discovery.json"
    sd.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
    conf = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    assert conf["scrape_configs"][0]["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    conf["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(sd)]
    conf["global"]["scrape_interval"] = "1s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
    port = _free_port()
    proc = subprocess.Popen(
        [
            _prometheus(),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),
    )
    return proc, f"http://127.0.0.1:{port}"


def _names(api: str) -> set[str]:
    try:
        return set(requests.get(f"{api}/api/v1/label/__name__/values", timeout=5).json()["data"])
    except (requests.RequestException, ValueError, KeyError):
        return set()


def test_prometheus_scraping_a_training_run_has_every_dashboard_metric(tmp_path, make_dataset, tiny_bert):
    spec = make_dataset("synth")
    ray_port = _free_port()
    prom, api = _start_prometheus(tmp_path, [f"127.0.0.1:{ray_port}"])
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    train = subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(spec), tiny_bert, str(tmp_path), str(ray_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "train.log", "w"),
        text=True,
        env=env,
    )
    try:
        line = next((out for out in train.stdout if out.startswith("RUN")), "")
        assert line.startswith("RUN") and line.split()[2] == "OK", (tmp_path / "train.log").read_text()[-3000:]
        run_id = line.split()[1]
        wanted = dashboard_metrics()
        deadline = time.time() + 120  # a few scrape intervals after the run; generous for a loaded machine
        while not wanted <= _names(api) and time.time() < deadline:
            time.sleep(1)
        assert wanted - _names(api) == set()
        series = requests.get(f"{api}/api/v1/series", params={"match[]": "ray_bioner_train_loss"}, timeout=5).json()[
            "data"
        ]
        assert {(s["run_id"], s["dataset"], s["rank"]) for s in series} == {(run_id, "synth", "0")}
        f1 = requests.get(
            f"{api}/api/v1/query", params={"query": 'ray_bioner_eval_f1{split="devel"}'}, timeout=5
        ).json()["data"]["result"]
        assert f1 and 0.0 <= float(f1[0]["value"][1]) <= 1.0
        # The worker may exit before Ray exports its last update, so epoch 2 is not guaranteed.
        epochs = requests.get(
            f"{api}/api/v1/query", params={"query": "max(max_over_time(ray_bioner_epoch[10m]))"}, timeout=5
        ).json()
        assert float(epochs["data"]["result"][0]["value"][1]) in (1.0, 2.0)
    finally:
        if train.poll() is None:
            train.stdin.close()
            try:
                train.wait(timeout=60)
            except subprocess.TimeoutExpired:
                train.kill()
        prom.terminate()
        prom.wait(timeout=30)
