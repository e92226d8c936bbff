"""A real one-machine cluster on 127.0.0.1: `cluster/local/up.sh` starts a Ray head (token auth on)
and an MLflow server; small tunes go in with `bioner submit` and with plain `ray job submit`, and
their parent and child runs are looked up in the server. Everything stops by process id."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import REPO, free_ports, session_pids

pytestmark = pytest.mark.timeout(900)

BIN = Path(sys.executable).parent
RAY_CLI_JOB = "bioner-test-ray-cli"


@dataclass
class Cluster:
    address: str
    tracking_uri: str
    env: dict  # what a user with the token has in the environment
    state: Path


def _run(cmd: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    token = d / "token"
    token.write_text(secrets.token_hex(32))
    dash, mlflow_port = free_ports(2)
    ray_tmp = tempfile.mkdtemp(prefix="bc", dir="/tmp")  # Ray's unix socket paths must stay short
    # No RAY_* from this process: an in-process test Ray sets RAY_API_SERVER_ADDRESS, which Ray's
    # CLI would prefer over --address.
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env = {**base, "RAY_AUTH_TOKEN_PATH": str(token), "PATH": f"{BIN}:{base.get('PATH', '')}"}
    up_env = {
        **env,
        "BIN": str(BIN),
        "BIONER_CLUSTER_DIR": str(d / "state"),
        "BIONER_RAY_TEMP_DIR": ray_tmp,
        "RAY_DASHBOARD_PORT": str(dash),
        "MLFLOW_PORT": str(mlflow_port),
        "RAY_NUM_CPUS": "4",
        "MLFLOW_WORKERS": "1",
    }
    try:
        r = _run([REPO / "cluster/local/up.sh"], up_env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        yield Cluster(f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{mlflow_port}", env, d / "state")
    finally:
        _run([REPO / "cluster/local/down.sh"], up_env, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _tune_args(d: Path, spec: Path, encoder: str, experiment: str) -> list[str]:
    sets = [
        f"dataset={spec}",
        f"encoder={encoder}",
        f"output_dir={d / experiment}",
        f"experiment={experiment}",
        # One trial: a search of several is test_tune's; here the path through the Jobs API and the server counts.
        "train_fraction=1.0",
        "num_samples=1",
        "max_epochs=1",
        "refit_seeds=1",
        "batch_size=16",
        "max_length=64",
        "search.learning_rate=[5.0e-4, 2.0e-3]",
        # Two jobs share 4 logical CPUs: one CPU per training worker leaves room for both at once.
        "cpus_per_worker=1",
    ]
    return ["tune", "experiments/tune-smoke.yaml", *[x for s in sets for x in ("--set", s)]]


@pytest.fixture(scope="module")
def jobs(cluster, tmp_path_factory, make_dataset, tiny_bert):
    """Both submissions run at once: plain `ray job submit` (no wait), then `bioner submit` (follows).

    The plain one trains once instead of tuning: two tunes at once took 4 of the test's 6 minutes on
    a loaded 2-core machine, and the tune path through the Jobs API is already the bioner one.
    """
    d = tmp_path_factory.mktemp("jobs")
    spec = make_dataset("synth", sizes=(32, 12, 12))
    ray_env = {**cluster.env, "RAY_AUTH_MODE": "token"}  # Ray's CLI sends the token only in token mode
    runtime_env = json.dumps(
        {
            "excludes": ["outputs", "mlruns", "mlartifacts", "*.db"],
            "env_vars": {"MLFLOW_TRACKING_URI": cluster.tracking_uri},
        }
    )
    train = {
        "dataset": spec,
        "encoder": tiny_bert,
        "output_dir": d / "train",
        "experiment": "cluster-ray-cli",
        "epochs": 1,
        "batch_size": 16,
        "max_length": 64,
        "train_fraction": 1.0,
        "cpus_per_worker": 1,
        "tracking_uri": cluster.tracking_uri,
    }
    ray_args = ["train", "experiments/tune-smoke.yaml", *[x for k, v in train.items() for x in ("--set", f"{k}={v}")]]
    r = _run(
        [
            BIN / "ray",
            "job",
            "submit",
            "--address",
            cluster.address,
            "--submission-id",
            RAY_CLI_JOB,
            "--no-wait",
            "--working-dir",
            ".",
            "--runtime-env-json",
            runtime_env,
            "--",
            "bioner",
            *ray_args,
        ],
        ray_env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    ours = _run(
        [
            BIN / "bioner",
            "submit",
            "--address",
            cluster.address,
            "--tracking-uri",
            cluster.tracking_uri,
            "--",
            *_tune_args(d, spec, tiny_bert, "cluster-submit"),
        ],
        cluster.env,
    )
    theirs = _run([BIN / "bioner", "jobs", "logs", RAY_CLI_JOB, "--follow", "--address", cluster.address], cluster.env)
    return ours, theirs


def test_submission_without_the_token_is_refused(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    r = _run(
        [BIN / "bioner", "submit", "--address", cluster.address, "--", "datasets", "check", "ncbi-disease"],
        env,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"{cluster.address}: the cluster wants a token (401): set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file "
        "holding it, or put it in ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)"
    ]
    assert "Traceback" not in r.stdout + r.stderr


def _tune_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} in {uri}"
    parents = client.search_runs([exp.experiment_id], "tags.`bioner.kind` = 'tune'")
    assert len(parents) == 1
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    return (
        parents[0],
        [r for r in children if r.data.tags.get("bioner.kind") == "trial"],
        [r for r in children if r.data.tags.get("bioner.kind") == "refit"],
    )


def test_bioner_submit_runs_a_tune_that_logs_to_the_server(cluster, jobs):
    ours, _ = jobs
    assert ours.returncode == 0, ours.stdout[-3000:] + ours.stderr[-3000:]
    job_id = re.search(r"submitted (raysubmit_\w+) to", ours.stdout).group(1)
    assert f"job {job_id}: SUCCEEDED" in ours.stdout
    assert f"--set tracking_uri={cluster.tracking_uri}" in ours.stdout  # the URI reached the tune config
    parent, trials, refits = _tune_runs(cluster.tracking_uri, "cluster-submit")
    assert parent.info.status == "FINISHED" and parent.data.tags["dataset"] == "synth"
    assert len(trials) == 1 and len(refits) == 1
    assert all(r.data.params["eval_split"] == "devel" for r in trials)
    assert "test_f1" in refits[0].data.metrics
    # artifacts went through the server (--serve-artifacts) into the cluster's artifact root
    assert list((cluster.state / "mlartifacts").rglob("MLmodel"))


def test_plain_ray_job_submit_works_too(cluster, jobs):
    _, theirs = jobs
    assert theirs.returncode == 0, theirs.stdout[-3000:] + theirs.stderr[-3000:]
    assert f"job {RAY_CLI_JOB}: SUCCEEDED" in theirs.stdout
    client = MlflowClient(cluster.tracking_uri)
    exp = client.get_experiment_by_name("cluster-ray-cli")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "1"
    assert "test_f1" in run.data.metrics


def test_jobs_list_shows_both_jobs_and_stop_leaves_a_finished_one(cluster, jobs):
    r = _run(
        [BIN / "bioner", "jobs", "list", "--address", cluster.address], {**cluster.env, "COLUMNS": "200"}, timeout=120
    )
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "SUCCEEDED" in line]
    assert len(rows) == 2 and any(RAY_CLI_JOB in row for row in rows)
    r = _run([BIN / "bioner", "jobs", "stop", RAY_CLI_JOB, "--address", cluster.address], cluster.env, timeout=120)
    assert r.returncode == 0 and f"{RAY_CLI_JOB} is not running (SUCCEEDED)" in r.stdout, r.stdout + r.stderr


def test_down_stops_every_process_it_started(cluster):
    leaders = {name: int((cluster.state / f"{name}.pid").read_text()) for name in ("ray", "mlflow")}
    assert all(session_pids(p) for p in leaders.values())
    env = {**cluster.env, "BIONER_CLUSTER_DIR": str(cluster.state)}
    r = _run([REPO / "cluster/local/down.sh"], env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert {name: session_pids(p) for name, p in leaders.items()} == {"ray": [], "mlflow": []}
    assert not list(cluster.state.glob("*.pid"))
