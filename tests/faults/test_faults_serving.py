"""Issue 17 case 16: `mlflow models serve` of a bioner model, against oversized and abandoned requests.

A real scoring server (uvicorn, started by MLflow's CLI) with a 3-second request timeout:
oversized input is refused before any work with a 400 that names the limit, a malformed 10 MB
payload's 400 does not quote it back, and a request the server has given up on (504) stops
using the CPU instead of running on in its thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import requests
from _faultkit import VENV_BIN, clean_env, free_port, wait_for

from helpers import save_pyfunc, save_random_model

TIMEOUT_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_bert):
    d = tmp_path_factory.mktemp("serve")
    save_pyfunc(d / "mlflow", save_random_model(d / "folder", tiny_bert))
    port = free_port()
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(d / "mlflow"),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "serve.log", "wb"),
        env=clean_env(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT=str(TIMEOUT_S)),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(url + "/ping", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for(up, 180, "mlflow models serve to answer /ping", proc=proc, every=1)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _invoke(url: str, body: bytes, timeout: float = 60) -> requests.Response:
    return requests.post(url + "/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=timeout)


def _cpu_seconds(pid: int) -> float:
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def test_a_10_mb_text_is_refused_at_once_naming_the_limit(server):
    url, _ = server
    r = _invoke(url, json.dumps({"inputs": ["flu " * 2_500_000]}).encode())
    assert r.status_code == 400, r.text[:500]
    assert len(r.content) < 2000
    assert (
        "10,000,000 characters, more than the limit of 1,000,000 per text" in r.text
        and "BIONER_MAX_TEXT_CHARS" in r.text
    )


def test_too_many_texts_in_one_request_are_refused(server):
    url, _ = server
    r = _invoke(url, json.dumps({"inputs": ["flu"] * 1001}).encode())
    assert r.status_code == 400 and len(r.content) < 2000, r.text[:500]
    assert "1,001 texts in one request, more than the limit of 1,000" in r.text and "BIONER_MAX_TEXTS" in r.text


def test_a_malformed_10_mb_payload_is_not_echoed(server):
    url, _ = server
    r = _invoke(url, b'{"inputs": ["' + b"x" * 10_000_000)
    assert r.status_code == 400
    assert len(r.content) < 2000, len(r.content)
    assert "valid JSON" in r.text


def test_an_abandoned_request_stops_working(server):
    """Six texts of 900,000 characters are far more work than the 3-s limit allows: the server answers
    504 at the limit; the work must stop at its next batch, not run on to the end of the request."""
    url, proc = server
    t0 = time.monotonic()
    text = ("the patient was seen with flu . " * 30_000)[:900_000]
    r = _invoke(url, json.dumps({"inputs": [text] * 6}).encode())
    assert r.status_code == 504, r.text[:500]
    # Features are built before the first batch (a few seconds that no check interrupts). The CPU is
    # watched in 5-second windows from the 504 on: two idle windows in a row (10 s) pass early (idle
    # from about 4 s on this machine, where most of the old 25 s wait was idle); else the window from
    # 25 s, the one this test has always judged, decides. Work that runs on is busy in every window.
    idle, last = 0, False
    while not last and idle < 2:
        if time.monotonic() - t0 > 20:
            time.sleep(max(0.0, 25 - (time.monotonic() - t0)))
            last = True
        before = _cpu_seconds(proc.pid)
        time.sleep(5)
        busy = _cpu_seconds(proc.pid) - before
        idle = idle + 1 if busy < 1.5 else 0
    assert busy < 1.5, f"the server used {busy:.1f} s of CPU in 5 s after giving the request up"
    ok = _invoke(url, json.dumps({"inputs": ["the patient was seen with flu"]}).encode(), timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
