"""Locust users of the serving load test; `loadtest.py` runs them headless against 127.0.0.1.

Each user is a closed loop: it sends its next request when the answer to the last one came. A
request carries LOADTEST_TEXTS_PER_REQUEST NCBI-disease test sentences (from LOADTEST_TEXTS, a
JSON list). `BioNERServe` posts to `bioner serve` (/predict), `MLflowServe` to `mlflow models
serve` (/invocations), with the same texts. Every request is appended to LOADTEST_LOG (JSON lines:
send time, status, model version) when it is set; the run ends at locust's --run-time, after
LOADTEST_MAX_REQUESTS requests, or when the file LOADTEST_STOP_FILE appears.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import gevent
from locust import events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

TEXTS: list[str] = json.loads(Path(os.environ["LOADTEST_TEXTS"]).read_text(encoding="utf-8"))
PER_REQUEST = int(os.environ.get("LOADTEST_TEXTS_PER_REQUEST", "1"))
MAX_REQUESTS = int(os.environ.get("LOADTEST_MAX_REQUESTS", "0"))
STOP_FILE = os.environ.get("LOADTEST_STOP_FILE")
LOG = open(os.environ["LOADTEST_LOG"], "a", encoding="utf-8") if os.environ.get("LOADTEST_LOG") else None
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_sent = itertools.count()
_ending = []


def _end_run(environment) -> None:
    """End the whole run from inside a user: the runner's quit() kills every user greenlet, so it must
    run in a greenlet of its own, or it dies with the user that called it and the run never ends."""
    if not _ending:
        _ending.append(gevent.spawn(environment.runner.quit))
    raise StopUser()


@events.test_start.add_listener
def _loopback_only(environment, **_):
    host = urlparse(environment.host or "").hostname
    if host not in LOOPBACK:
        raise SystemExit(f"load test refused: --host {environment.host} is not 127.0.0.1")


@events.quitting.add_listener
def _close_log(environment, **_):
    if LOG:
        LOG.close()


class _ServingUser(FastHttpUser):
    abstract = True
    path = ""

    def payload(self, texts: list[str]) -> dict:
        raise NotImplementedError

    def answers(self, body) -> list:
        raise NotImplementedError

    @task
    def tag(self):
        n = next(_sent)
        if (MAX_REQUESTS and n >= MAX_REQUESTS) or (STOP_FILE and os.path.exists(STOP_FILE)):
            _end_run(self.environment)
        texts = [TEXTS[(n * PER_REQUEST + k) % len(TEXTS)] for k in range(PER_REQUEST)]
        sent = time.time()
        version = None
        with self.client.post(self.path, json=self.payload(texts), name=self.path, catch_response=True) as r:
            version = r.headers.get("X-Model-Version") if r.headers else None
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            else:
                try:
                    ok = len(self.answers(r.json())) == len(texts)
                except (ValueError, TypeError, KeyError):
                    ok = False
                if not ok:
                    r.failure("answer is not one list of entities per text")
            status = r.status_code
        if LOG:
            LOG.write(json.dumps({"sent": sent, "done": time.time(), "status": status, "version": version}) + "\n")


class BioNERServe(_ServingUser):
    """`bioner serve`: POST /predict {"texts": [...]} -> [[entity, ...], ...], X-Model-Version header."""

    path = "/predict"

    def payload(self, texts):
        return {"texts": texts}

    def answers(self, body):
        return body


class MLflowServe(_ServingUser):
    """`mlflow models serve`: POST /invocations {"inputs": [...]} -> {"predictions": [[entity, ...], ...]}."""

    path = "/invocations"

    def payload(self, texts):
        return {"inputs": texts}

    def answers(self, body):
        return body["predictions"]
