"""`bioner serve` for real: Ray Serve on the session's local Ray, a trained tiny model registered in a
SQLite MLflow store, its alias moved by `promote` under load, a replica killed with SIGKILL."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from bioner.cli import app
from bioner.data.iob import read_split
from bioner.data.specs import load_spec
from bioner.serve.config import VERSION_HEADER, serve_config
from bioner.serve.deploy import DEPLOYMENT, start
from bioner.tracking.registry import promote, register_challenger
from bioner.train.local_ray import free_port, start_local_ray
from helpers import client_threads, is_loopback, run_concurrently

pytestmark = pytest.mark.usefixtures("ray_local")

DS = "synth-reg"  # the dataset of the session's strong run (conftest.strong_run)
APP = "bioner-test"


@pytest.fixture(scope="module")
def registry(strong_run, tmp_path_factory):
    """One trained run (the session's strong run, conftest.strong_run, in a copy of its store as the fit
    left it) registered as version 1 of bioner-synth-reg, promoted to champion."""
    import ray

    if not ray.is_initialized():  # an earlier test stopped the session's Ray (no_ray_in_process)
        start_local_ray(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    spec, _, run, snapshot = strong_run
    d = tmp_path_factory.mktemp("serve")
    shutil.copyfile(snapshot, d / "mlflow.db")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "BIONER_DATASETS")}
    os.environ.update(MLFLOW_TRACKING_URI=uri, BIONER_DATASETS=str(spec.parent))
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    v1 = register_challenger(client, DS, run.model_uri, "first", {})
    assert promote(DS, tracking_uri=uri, progress=False).promoted
    texts = [" ".join(t) for t in read_split(load_spec(str(spec)), "test").tokens]
    yield {"uri": uri, "client": client, "run": run, "v1": v1, "texts": texts}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def server(registry):
    """Two replicas (half a CPU each) following models:/bioner-synth-reg@champion, shut down at the end."""
    from ray import serve

    cfg = serve_config(
        model=f"models:/bioner-{DS}@champion",
        tracking_uri=registry["uri"],
        app_name=APP,
        replicas=2,
        cpus_per_replica=0.5,
        port=free_port(),
        poll_s=0.5,
        max_texts=8,
        max_chars=500,
        max_batch_texts=16,
    )
    start(cfg)
    yield {"url": f"http://127.0.0.1:{cfg.port}", "cfg": cfg}
    serve.shutdown()


def post(url: str, body, timeout: float = 30):
    """(status, JSON answer, model version header); a connection failure is status 0."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/predict", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers.get(VERSION_HEADER)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            answer = json.loads(raw)
        except ValueError:  # Serve's own errors (a replica died under the request) are plain text
            answer = raw.decode("utf-8", "replace")
        return e.code, answer, e.headers.get(VERSION_HEADER)
    except OSError as e:
        return 0, str(e), None


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read())


def same_entities(got, expected) -> bool:
    """Equal entities; scores within int8's rounding (activations are quantised per batch, and batches differ)."""

    def strip(lists):
        return [[{k: v for k, v in e.items() if k != "score"} for e in es] for es in lists]

    scores = [
        (a["score"], b["score"]) for ga, eb in zip(got, expected, strict=True) for a, b in zip(ga, eb, strict=True)
    ]
    return strip(got) == strip(expected) and all(abs(a - b) < 0.05 for a, b in scores)


def test_answers_equal_bioner_predict(server, registry):
    texts = registry["texts"][:6] + ["", "no entities at all here", "the patient was seen with lyme disease and flu"]
    r = CliRunner().invoke(app, ["predict", "--model", f"models:/bioner-{DS}@champion", *[t for t in texts if t]])
    assert r.exit_code == 0, r.output
    expected = {json.loads(line)["text"]: json.loads(line)["entities"] for line in r.stdout.strip().splitlines()}
    expected[""] = []
    assert any(expected.values()), "the trained model finds no entity: the comparison would be empty"

    status, got, version = post(server["url"], {"texts": texts[:8]})
    assert status == 200 and version == registry["v1"]
    assert same_entities(got, [expected[t] for t in texts[:8]])
    # one text per request, from several clients at once: batched together on the replicas, same answers
    answers = run_concurrently([lambda t=t: post(server["url"], {"texts": [t]}) for t in texts])
    assert same_entities([a[1][0] for a in answers], [expected[t] for t in texts])

    status, only, _ = post(server["url"], {"texts": texts[:8], "types": ["Disease"]})
    assert status == 200 and same_entities(
        only, [expected[t] for t in texts[:8]]
    )  # the model's one type: nothing filtered out
    status, answer, _ = post(server["url"], {"texts": texts[:2], "types": ["Gene"]})
    assert status == 422 and answer["error"].startswith("types: Gene not known")

    info = get(server["url"], "/model")
    assert (
        info["name"] == f"bioner-{DS}"
        and info["version"] == registry["v1"]
        and info["run_id"] == registry["run"].run_id
    )
    assert info["types"] == ["Disease"] and info["loaded_at"] and info["alias"] == "champion"
    assert get(server["url"], "/health")["status"] == "ok"


def test_documents_answer_as_bioner_predict_format_bioc_json(server, registry, tmp_path):
    texts = registry["texts"]
    docs = [
        {
            "id": f"d{i}",
            "infons": {},
            "relations": [],
            "passages": [
                {"offset": 0, "infons": {"type": "title"}, "text": texts[i], "annotations": [], "relations": []},
                {
                    "offset": len(texts[i]) + 1,
                    "infons": {"type": "abstract"},
                    "annotations": [],
                    "relations": [],
                    "text": f"{texts[i + 1]} . {texts[i + 2]} .",
                },
            ],
        }
        for i in range(0, 12, 3)
    ]
    collection = {"source": "test", "date": "", "key": "", "infons": {}, "documents": docs}
    src = tmp_path / "docs.json"
    src.write_text(json.dumps(collection), encoding="utf-8")
    r = CliRunner().invoke(
        app,
        [
            "predict",
            "--model",
            f"models:/bioner-{DS}@champion",
            "--input",
            str(src),
            "--output",
            str(tmp_path / "out.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    req = urllib.request.Request(
        server["url"] + "/documents", data=json.dumps(collection).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as answer:
        assert answer.headers.get(VERSION_HEADER) == registry["v1"]
        served = json.loads(answer.read())

    def mentions(c):
        return [
            [
                (a["locations"][0]["offset"], a["locations"][0]["length"], a["text"], a["infons"]["type"])
                for p in d["passages"]
                for a in p["annotations"]
            ]
            for d in c["documents"]
        ]

    expected = mentions(json.loads((tmp_path / "out.json").read_text(encoding="utf-8")))
    assert any(expected) and mentions(served) == expected
    assert served["source"] == "test" and [d["id"] for d in served["documents"]] == [d["id"] for d in docs]


@pytest.mark.parametrize(
    "body,status,field",
    [
        ({"texts": ["flu"] * 9}, 413, "texts: 9 texts"),
        ({"texts": ["flu " * 200]}, 413, "texts.0: 800 characters"),
        (b'{"texts": [', 422, "body: not valid JSON"),
        ({"texts": "flu"}, 422, "texts: "),
        ({"texts": ["flu", 3]}, 422, "texts.1: "),
        ({"sentences": ["flu"]}, 422, "texts: Field required"),
        (b'{"texts": ["\\udc80"]}', 422, "texts.0: not valid UTF-8"),
    ],
)
def test_a_clients_mistake_is_a_413_or_422_never_a_500(server, body, status, field):
    got, answer, _ = post(server["url"], body)
    assert got == status and answer["error"].startswith(field), answer


def _logged_request(url: str, texts: list[str], log: list) -> Callable[[int], None]:
    """A client's i-th request: one text; (time sent, status, answering version) appended to `log`."""

    def request(i: int) -> None:
        t0 = time.time()
        status, _, version = post(url, {"texts": [texts[i % len(texts)]]})
        log.append((t0, status, version))

    return request


def _allowed(t_sent: float, timeline: list[tuple[float, str]]) -> set[str]:
    """Versions the alias named at t_sent or later: a move counts from when `promote` returned."""
    current = max((k for k, (t_done, _) in enumerate(timeline) if t_done <= t_sent), default=0)
    return {v for _, v in timeline[current:]}


def test_alias_moves_under_load_switch_versions_without_a_failed_request(server, registry):
    client, uri = registry["client"], registry["uri"]
    timeline = [(0.0, registry["v1"])]
    log = []
    with client_threads(3, _logged_request(server["url"], registry["texts"], log)):
        for n in range(2):
            time.sleep(1.5)
            version = register_challenger(client, DS, registry["run"].model_uri, f"move {n}", {})
            assert promote(DS, force=True, reason=f"serving test, move {n}", tracking_uri=uri, progress=False).promoted
            timeline.append((time.time(), version))
        time.sleep(2.0)
    failed = [r for r in log if r[1] != 200]
    print(f"alias moves under load: {len(log)} requests, {len(failed)} failed, versions {sorted({r[2] for r in log})}")
    assert not failed, f"{len(failed)} of {len(log)} requests failed: {failed[:3]}"
    stale = [r for r in log if r[2] not in _allowed(r[0], timeline)]
    assert not stale, f"{len(stale)} answers from a version older than the alias named: {stale[:3]} (moves: {timeline})"
    last = timeline[-1]
    assert any(r[2] == last[1] for r in log if r[0] > last[0]), "no answer from the last promoted version"
    info = get(server["url"], "/model")
    assert info["version"] == last[1] and info["history"][-1]["to"] == last[1], info


def _replicas() -> dict[str, int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:{APP}:{DEPLOYMENT}"), ("state", "=", "ALIVE")])
    return {a.actor_id: a.pid for a in actors}


def test_a_killed_replica_is_restarted_and_the_service_keeps_answering(server, registry):
    before = _replicas()
    assert len(before) == 2
    victim, pid = next(iter(before.items()))
    log, clients = [], 2
    with client_threads(clients, _logged_request(server["url"], registry["texts"], log)):
        time.sleep(1.0)
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = killed + 120
        while time.time() < deadline and not (len(_replicas()) == 2 and victim not in _replicas()):
            time.sleep(1)
        restarted = time.time()
        assert victim not in _replicas() and len(_replicas()) == 2, f"no new replica after 120 s: {_replicas()}"
        time.sleep(1.0)
    failed = [r for r in log if r[1] != 200]
    during = [r for r in log if killed < r[0] < restarted and r[1] == 200]
    print(
        f"replica killed under load: {len(log)} requests, {len(failed)} failed {[r[1] for r in failed]}, "
        f"{len(during)} answered while the new replica started ({restarted - killed:.1f} s)"
    )
    # at most the requests the dead replica held fail; the other replica answers while Serve starts a new one
    assert len(failed) <= clients, failed
    assert during, "nothing answered while the killed replica was being replaced"
    assert post(server["url"], {"texts": registry["texts"][:2]})[0] == 200


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    import psutil

    names = {}
    for pid in pids:
        try:
            names[pid] = psutil.Process(pid).name()
        except psutil.NoSuchProcess:
            pass
    return [
        (c.laddr.ip, c.laddr.port, names[c.pid])
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.pid in names
    ]


def _haproxies() -> set[int]:
    """The HAProxy processes of this session's Serve (their configuration is in the folder bioner made)."""
    import psutil

    folder = os.environ.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE", "\0")
    return {p.pid for p in psutil.process_iter(["cmdline"]) if any(folder in a for a in p.info["cmdline"] or [])}


def test_the_served_application_listens_on_loopback_but_for_rays_token_guarded_replica_port(server):
    """HAProxy's stats page and metrics exporter (Ray binds them to every interface) are moved to the
    --host address by bioner's launcher; the one port Ray's code opens on every interface in this mode is
    each replica's inter-deployment gRPC server, which checks Ray's token (documented in the README)."""
    import psutil

    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        pytest.skip("Serve's proxy ingress (no HAProxy here): test_faults_security covers its sockets")
    haproxy = _haproxies()
    assert haproxy, "no HAProxy process with bioner's configuration folder"
    on_haproxy = _listening(haproxy)
    assert {p for _, p, _ in on_haproxy} >= {
        server["cfg"].port,
        int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"]),
        int(os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"]),
    }, on_haproxy
    assert [a for a in on_haproxy if not is_loopback(a[0])] == []
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    wide = [a for a in _listening(ours) if not is_loopback(a[0])]
    assert all(name.startswith("ray::ServeRepli") for _, _, name in wide) and len(wide) <= len(_replicas()), wide


def test_haproxy_ends_when_its_manager_is_killed(server):
    """A HAProxy left running holds the service's port, and the next `bioner serve` cannot start. Here the
    raylet reaps a dead worker's children; when Ray itself goes first (a `bioner serve` whose shutdown
    timed out left one this way), the launcher's parent-death signal ends it. Runs after the tests that
    use the session's Serve (Serve starts a new manager and HAProxy)."""
    from ray.util.state import list_actors

    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        pytest.skip("Serve's proxy ingress: no HAProxy here")
    before = _haproxies()
    managers = list_actors(filters=[("class_name", "=", "HAProxyManager"), ("state", "=", "ALIVE")])
    assert before and len(managers) == 1, (before, managers)
    os.kill(managers[0].pid, signal.SIGKILL)
    deadline = time.time() + 15
    while before & _haproxies() and time.time() < deadline:
        time.sleep(0.2)
    assert not before & _haproxies(), "HAProxy outlived its manager"


def test_the_bioner_serve_command_answers_and_stops_cleanly_on_sigterm(registry):
    """The command a user runs, on a local Ray of its own: it says which ingress it chose, answers, and on
    SIGTERM (`bioner jobs stop`) shuts down with exit 0, leaving no HAProxy and no HAProxy folder behind."""
    import subprocess
    import sys

    import psutil

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry["uri"]}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        sys.executable,
        "-m",
        "bioner.cli",
        "serve",
        "--model",
        f"models:/bioner-{DS}@champion",
        "--port",
        str(port),
        "--cpus-per-replica",
        "0.5",
        "--poll-s",
        "5",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not any("serving on http" in line for line in lines):
            time.sleep(0.5)
        status, answer, version = post(url, {"texts": registry["texts"][:2]})
        champion = registry["client"].get_model_version_by_alias(f"bioner-{DS}", "champion").version
        assert status == 200 and len(answer) == 2 and version == str(champion), (
            status,
            answer,
            version,
            "".join(lines[-20:]),
        )
        # The command's own HAProxy: started after the command, so not one of the session's Serve
        # (whose folders stay until the session ends, and one of which may still be shutting down).
        started = psutil.Process(proc.pid).create_time()
        mine = [
            p
            for p in psutil.process_iter(["cmdline", "create_time"])
            if any("bioner-haproxy-" in a for a in p.info["cmdline"] or []) and (p.info["create_time"] or 0) >= started
        ]
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(10)
    out = "".join(lines)
    assert rc == 0 and "stopped" in out, out[-3000:]
    said = next(line for line in out.splitlines() if "serving on http" in line)
    if sys.platform.startswith("linux"):
        assert "haproxy ingress" in said, said
        assert mine, "no HAProxy of the command's own was running"
        folders = {
            m.group(1) for p in mine for a in p.info["cmdline"] if (m := re.match(r"(.*/bioner-haproxy-[^/]+)", a))
        }
        assert folders
        time.sleep(1)
        assert not [p for p in mine if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], (
            "HAProxy outlived bioner serve"
        )
        assert not [f for f in folders if os.path.exists(f)], f"HAProxy's folder left behind: {folders}"
