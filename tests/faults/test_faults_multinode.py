"""Issue 17 case 20: DDP across two Ray nodes.

A head and a second node joined to it, one CPU each, on this host (as Ray's own multi-node tests
run them: both nodes share one temp dir), an MLflow server, and a `bioner tune` submitted as a
Ray job from a folder with a relative spec: its trial and its refit each train with 2 workers,
one on each node, then it scores, logs and registers the model. Before #17 the job died when its
driver loaded the model (Ray had unpacked the job's folder again under it: os.getcwd() failed),
the spec path was relative to a folder the workers are not in, and Ray Train's placement-group
cleaner could not tell which of the host's Ray instances to ask. Everything the test starts is
stopped by process id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from _faultkit import MlflowServer, clean_env, wait_for
from mlflow import MlflowClient

from helpers import synthetic_corpus, two_ray_nodes, write_spec

pytestmark = pytest.mark.timeout(1200)


@dataclass
class TwoNodes:
    dashboard: str
    tracking_uri: str
    env: dict
    temp_dir: Path


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    d = tmp_path_factory.mktemp("two-nodes")
    # No token (loopback only), no RAY_* of this process: each node and job finds its cluster by address.
    env = clean_env(RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    server = MlflowServer(d)
    with two_ray_nodes(d, env) as nodes:
        try:
            server.start()
            wait_for(lambda: len(_nodes(nodes.dashboard)) == 2, 120, "both nodes to be alive")
            yield TwoNodes(nodes.dashboard, server.uri, env, nodes.temp_dir)
        finally:
            server.stop()


def _state(url: str, what: str, **filters: str) -> list[dict]:
    params = {"detail": "1", "limit": "10000"}
    if filters:
        params.update(
            filter_keys=list(filters), filter_predicates=["="] * len(filters), filter_values=list(filters.values())
        )
    r = requests.get(f"{url}/api/v0/{what}", params=params, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]["result"]


def _nodes(url: str) -> list[dict]:
    try:
        return [n for n in _state(url, "nodes") if n["state"] == "ALIVE"]
    except requests.RequestException:
        return []


def test_a_tune_job_trains_across_two_nodes_scores_logs_and_registers(two_nodes, tmp_path, tiny_bert):
    work = tmp_path / "job"  # the folder shipped as the job's working_dir: config, spec and corpus, all relative
    synthetic_corpus(work / "corpus", sizes=(48, 16, 16), seed=3)
    write_spec(work / "twonode.yaml", "corpus", name="twonode")
    (work / "tune.yaml").write_text(
        "dataset: twonode.yaml\nencoder: "
        + tiny_bert
        + "\nbatch_size: 8\nmax_length: 48\ntrain_fraction: 1.0\nbeta: 0\n"
        "num_workers: 2\nexperiment: twonode\nnum_samples: 1\nmax_epochs: 1\ngrace_period: 1\nrefit_seeds: 1\n"
        "search: {alpha: [1.0, 1.0], beta: [0.0, 0.0], learning_rate: [1.0e-3, 2.0e-3], query_source: [none]}\n"
    )
    out = tmp_path / "out"  # absolute: both nodes of this host write checkpoints there
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bioner.cli",
            "submit",
            "--address",
            two_nodes.dashboard,
            "--tracking-uri",
            two_nodes.tracking_uri,
            "--working-dir",
            str(work),
            "--",
            "tune",
            "tune.yaml",
            "--set",
            f"output_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=1100,
        env=two_nodes.env,
    )
    logs = r.stdout + r.stderr
    assert r.returncode == 0 and "SUCCEEDED" in r.stdout, logs[-6000:]
    assert "Found multiple active Ray instances" not in logs and "Traceback" not in logs, logs[-6000:]

    # every Ray Train run (the trial and the refit) had one worker on each node
    workers = _state(two_nodes.dashboard, "actors", class_name="RayTrainWorker")
    runs: dict[str, set] = {}
    for w in workers:
        runs.setdefault(w["placement_group_id"], set()).add(w["node_id"])
    assert len(runs) == 2 and all(len(nodes) == 2 for nodes in runs.values()), runs
    assert set().union(*runs.values()) == {n["node_id"] for n in _nodes(two_nodes.dashboard)}
    # the job named its cluster to Ray Train's placement-group cleaners (else they ask "the" Ray of the host)
    cleaners = _state(two_nodes.dashboard, "actors", class_name="PlacementGroupCleaner")
    assert cleaners and all(
        json.loads(c["serialized_runtime_env"]).get("env_vars", {}).get("RAY_API_SERVER_ADDRESS") == two_nodes.dashboard
        for c in cleaners
    ), [c["serialized_runtime_env"] for c in cleaners]
    # whether Ray unpacked the job's folder again under it this time (it depends on timing): for the record
    again = [
        f.name
        for f in two_nodes.temp_dir.glob("session_latest/logs/runtime_env_setup-*.log")
        if "Removing" in f.read_text()
    ]
    print(f"the job's folder was unpacked again under the driver: {bool(again)} {again}")

    client = MlflowClient(two_nodes.tracking_uri)
    exp = client.get_experiment_by_name("twonode")
    runs_ = client.search_runs([exp.experiment_id])
    kinds = {r.data.tags.get("bioner.kind"): r for r in runs_}
    assert kinds["tune"].info.status == "FINISHED" and kinds["refit"].info.status == "FINISHED"
    assert "test_f1" in kinds["refit"].data.metrics and "devel_f1" in kinds["trial"].data.metrics
    version = client.get_model_version_by_alias("bioner-twonode", "challenger")
    assert version.run_id == kinds["refit"].info.run_id and version.tags["corpus.test_sha256"]
