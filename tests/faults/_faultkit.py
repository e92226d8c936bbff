"""Helpers of the fault tests: the `bioner` entry point run in-process or as a process, a
saved random model, and a real `mlflow server` that a test can stop and start again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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
