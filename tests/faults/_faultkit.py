"""Helpers of the fault tests: the `bioner` entry point run in-process or as a process, a
saved random model, and a real `mlflow server` that a test can stop and start again."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import Outcome as Outcome  # re-exported: the fault tests take it from here
from helpers import bioner as bioner

VENV_BIN = Path(sys.executable).parent


def assert_refused(o: Outcome, *needles: str) -> str:
    """Exit 2 with exactly one line on stderr that contains every needle, and no traceback."""
    lines = o.stderr.strip().splitlines()
    assert o.code == 2, (o.code, o.stderr[-2000:])
    assert len(lines) == 1, o.stderr
    assert "Traceback" not in o.stderr + o.stdout
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def finished_runs(tracking_uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(exps) if r.info.status == "FINISHED"] if exps else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    """The environment for a `bioner` child process: its own local Ray and store, never this session's."""
    # no Ray address, and no MLflow store that an in-process job of this session wrote to the variable
    # nor the single-machine switch that the session's own local Ray set in this process (bioner.train.local_ray):
    # a child that runs `ray start --address` would refuse to join a cluster
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group of a child started with start_new_session=True."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def wait_for(predicate, timeout: float, what: str, proc=None, every: float = 0.5):
    """Poll `predicate` until it returns a true value; fail naming `what` on timeout or child death.

    `proc`: a Popen, or a job object with `.proc` and `.output()` (its collected output is shown)."""
    popen = getattr(proc, "proc", proc)

    def tail() -> str:
        if hasattr(proc, "output"):
            return proc.output()[-3000:]
        return popen.stderr.read()[-3000:] if popen is not None and popen.stderr else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if popen is not None and popen.poll() is not None:
            pytest.fail(f"the process ended (code {popen.returncode}) before {what}:\n{tail()}")
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{tail()}")


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store; stop() and start() keep port and store."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.store = f"sqlite:///{root / 'mlflow.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        import requests

        cmd = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.store,
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--workers",
            "1",
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "ab"),
            env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # as cluster/local/up.sh
            start_new_session=True,
        )

        def up():
            try:
                return requests.get(self.uri + "/health", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, timeout, "the MLflow server to answer /health", every=0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
        self.proc = None


_NODE_PORT_OPTIONS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
)


def stop_session(proc: subprocess.Popen) -> None:
    """SIGTERM to the leader (`ray start --block` stops its node), then whatever is left in its session.
    Not the 30 s a node may drain for: nothing runs on it any more, and the suite's time counts."""
    from helpers import session_pids

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        left = session_pids(proc.pid)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


@contextmanager
def two_ray_nodes(log_dir: Path, env: dict) -> Iterator[tuple[str, Path]]:
    """A Ray head and a second node joined to it, one CPU each, on this host (as Ray's own multi-node
    tests run them: both share one temp dir), every port chosen free; yields the dashboard's URL and the temp dir.
    `env` is the nodes' whole environment. Both are stopped by process id at the end."""
    from helpers import free_ports

    temp_dir = Path(tempfile.mkdtemp(prefix="bn", dir="/tmp"))  # Ray's socket paths must stay short
    gcs, dash, client, *ports = free_ports(15)
    procs: list[subprocess.Popen] = []

    def node(args: list[str], port_values: list[int], log: str) -> None:
        ports_args = [x for name, port in zip(_NODE_PORT_OPTIONS, port_values, strict=True) for x in (name, str(port))]
        cmd = [str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
        p = subprocess.Popen(
            [*cmd, "--num-cpus", "1", *args, *ports_args],
            stdout=open(log_dir / log, "wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        procs.append(p)
        log_text = log_dir / log
        wait_for(lambda: "Ray runtime started" in log_text.read_text(errors="replace"), 180, f"Ray ({log})", proc=p)

    try:
        head = ["--head", "--port", str(gcs), "--temp-dir", str(temp_dir), "--dashboard-host", "127.0.0.1"]
        node([*head, "--dashboard-port", str(dash), "--ray-client-server-port", str(client)], ports[:6], "head.log")
        node(["--address", f"127.0.0.1:{gcs}"], ports[6:12], "node2.log")
        yield f"http://127.0.0.1:{dash}", temp_dir
    finally:
        for p in reversed(procs):
            stop_session(p)
        shutil.rmtree(temp_dir, ignore_errors=True)
