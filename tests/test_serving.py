"""`bioner serve` without Ray: the alias follower on a fake registry, and the HTTP routes on uvicorn
with a stand-in replica. The real thing (Ray Serve, MLflow, a trained model) is
tests/integration/test_serve.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from bioner.errors import ConfigError
from bioner.serve.api import build_api
from bioner.serve.config import VERSION_HEADER, ServeConfig, serve_config
from bioner.serve.follow import SETTLE_NS, Follower, Loaded, ModelRef, Registry, parse_model_uri
from bioner.train.local_ray import free_port


def test_model_uris():
    assert parse_model_uri("models:/bioner-x@champion") == ModelRef(
        "models:/bioner-x@champion", "bioner-x", "champion", None
    )
    assert parse_model_uri("models:/bioner-x/3") == ModelRef("models:/bioner-x/3", "bioner-x", None, "3")
    assert not parse_model_uri("models:/bioner-x@champion").version
    for fixed in ("outputs/models/abc", "runs:/abc/model", "models:/x/Production"):
        assert parse_model_uri(fixed).name is None and not parse_model_uri(fixed).follows


def test_options_are_checked_by_name():
    with pytest.raises(ConfigError, match="--max-batch 8 < --max-texts 64"):
        serve_config(model="m", max_batch_texts=8)
    with pytest.raises(ConfigError, match="replicas"):
        serve_config(model="m", replicas=0)
    assert ServeConfig(model="m").max_body_bytes > 64 * 10_000


class FakeRegistry:
    def __init__(self, version="1"):
        self.version, self.reads, self.down = version, 0, False

    def alias_version(self, name, alias):
        self.reads += 1
        if self.down:
            raise ConnectionError("registry down")
        return self.version, f"run-{self.version}"

    def marker(self):
        return None  # like a store other than SQLite: every batch reads the alias


class FakeLoader:
    """Loads take `delay` seconds; versions in `broken` fail."""

    def __init__(self, delay=0.0, broken=()):
        self.delay, self.broken, self.loads = delay, set(broken), []

    def __call__(self, ref, registry, version, run_id, seq=0):
        self.loads.append(version)
        time.sleep(self.delay)
        if version in self.broken:
            raise OSError(f"version {version}: artifact missing")
        return Loaded(
            SimpleNamespace(types=["Disease"]), ref.name, version, run_id, f"models:/{ref.name}/{version}", "now", seq
        )


def _follower(registry, loader, **kw):
    return Follower(parse_model_uri("models:/bioner-x@champion"), registry, loader=loader, **kw)


def test_an_alias_move_loads_the_new_version_beside_the_old_and_switches():
    reg, loader = FakeRegistry("1"), FakeLoader(delay=0.2)

    async def scenario():
        f = _follower(reg, loader)
        old = await f.start()
        in_flight = await f.fresh()  # a batch that took the model before the promotion
        reg.version = "2"
        # three batches arrive while version 2 loads: one load, all three answer with version 2
        news = await asyncio.gather(*(f.fresh() for _ in range(3)))
        return f, old, in_flight, news

    f, old, in_flight, news = asyncio.run(scenario())
    assert in_flight is old and old.version == "1"
    assert {m.version for m in news} == {"2"} and loader.loads == ["1", "2"]
    assert f.current.version == "2" and f.current.run_id == "run-2"
    (switch,) = f.history
    assert switch["from"] == "1" and switch["to"] == "2" and switch["load_s"] >= 0.2
    assert f.info()["history"] == [switch] and f.info()["version"] == "2"


def test_a_read_older_than_the_current_model_does_not_roll_it_back():
    reg, loader = FakeRegistry("1"), FakeLoader()

    async def scenario():
        f = _follower(reg, loader)
        await f.start()
        stale = await f._read()  # read while the alias still named 1 ...
        reg.version = "2"
        await f.fresh()  # ... a later read switched to 2 ...
        return f, await f.ensure(*stale)  # ... the stale read's batch gets 2, no reload of 1

    f, model = asyncio.run(scenario())
    assert model.version == "2" and loader.loads == ["1", "2"]


def test_a_broken_version_or_a_registry_outage_keeps_the_old_model_answering():
    reg, loader = FakeRegistry("1"), FakeLoader(broken={"2"})

    async def scenario():
        f = _follower(reg, loader, retry_s=60)
        await f.start()
        reg.version = "2"
        first, second = await f.fresh(), await f.fresh()
        reg.down = True
        third = await f.fresh()
        return f, first, second, third

    f, first, second, third = asyncio.run(scenario())
    assert first.version == second.version == third.version == "1"
    assert loader.loads == ["1", "2"]  # the broken version is not retried on every batch
    assert "registry down" in f.last_error["error"] and f.history.maxlen


def test_without_check_alias_only_the_poll_reads_the_registry():
    reg, loader = FakeRegistry("1"), FakeLoader()

    async def scenario():
        f = _follower(reg, loader, check_alias=False)
        await f.start()
        reg.version = "2"
        before = await f.fresh()
        poll = asyncio.create_task(f.poll_forever(0.05))
        await asyncio.sleep(0.3)
        poll.cancel()
        return before, await f.fresh()

    before, after = asyncio.run(scenario())
    assert before.version == "1" and after.version == "2"


@pytest.fixture
def mlflow_uris_restored():
    """Registry sets MLflow's process-wide URIs and their env vars, which Ray workers started later
    inherit: put them back, or the next test's replicas open this test's deleted store."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # None unsets the env var too
    mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.usefixtures("mlflow_uris_restored")
def test_on_a_sqlite_store_a_batch_reads_the_alias_only_when_the_store_changed(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("bioner-x")
    for v in ("1", "2"):
        client.create_model_version("bioner-x", source=f"file:///models/{v}")
    client.set_registered_model_alias("bioner-x", "champion", "1")
    reg, loader = Registry(uri), FakeLoader()
    reads = []
    read = reg.alias_version
    reg.alias_version = lambda *a: reads.append(1) or read(*a)

    async def scenario():
        time.sleep(SETTLE_NS / 1e9 + 0.05)  # the store's files have settled
        f = _follower(reg, loader)
        await f.start()
        quiet = [(await f.fresh()).version for _ in range(5)]
        n_quiet = len(reads)
        client.set_registered_model_alias("bioner-x", "champion", "2")  # the promotion
        moved = (await f.fresh()).version
        return quiet, n_quiet, moved

    quiet, n_quiet, moved = asyncio.run(scenario())
    assert quiet == ["1"] * 5 and n_quiet == 1  # the start's read serves five unchanged batches
    assert moved == "2" and len(reads) == 2 and loader.loads == ["1", "2"]


class StandIn:
    """What the routes need from a replica."""

    def __init__(self, cfg):
        self.cfg, self.seen = cfg, []
        self.model = Loaded(SimpleNamespace(types=["Disease"]), "bioner-x", "7", "run", "models:/bioner-x/7", "now")

    async def predict(self, texts):
        self.seen.append(texts)
        return [[{"text": t[:3], "start": 0, "end": 3, "type": "Disease"}] if t else [] for t in texts], self.model

    def model_info(self):
        return {**self.model.info(), "history": []}


@pytest.fixture(scope="module")
def api_url():
    import uvicorn

    server = StandIn(ServeConfig(model="m", max_texts=3, max_chars=20, max_batch_texts=3))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(build_api(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def _post(url, body: bytes, content_type="application/json"):
    req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_predict_answers_with_the_model_version(api_url):
    status, body, headers = _post(api_url, json.dumps({"texts": ["measles here", ""]}).encode())
    assert status == 200 and body == [[{"text": "mea", "start": 0, "end": 3, "type": "Disease"}], []]
    assert headers.get(VERSION_HEADER) == "7"  # header names are case-insensitive
    info = json.loads(urllib.request.urlopen(api_url + "/model", timeout=10).read())
    assert info["version"] == "7" and info["types"] == ["Disease"]
    assert json.loads(urllib.request.urlopen(api_url + "/health", timeout=10).read())["status"] == "ok"
    assert "/predict" in json.loads(urllib.request.urlopen(api_url + "/openapi.json", timeout=10).read())["paths"]


@pytest.mark.parametrize(
    "body,status,field",
    [
        (b'{"texts": ["a", "b", "c", "d"]}', 413, "texts: 4 texts, at most 3"),
        (b'{"texts": ["ok", "' + b"x" * 21 + b'"]}', 413, "texts.1: 21 characters, at most 20"),
        (b'{"texts": ["' + b"x" * 2000 + b'"]}', 413, "body: "),  # over the body bound before it is parsed
        (b'{"texts": ["a",', 422, "body: not valid JSON"),
        (b'{"texts": "a"}', 422, "texts: "),
        (b'{"texts": ["a", 2]}', 422, "texts.1: "),
        (b'{"texts": [null]}', 422, "texts.0: "),
        (b'{"text": ["a"]}', 422, "texts: Field required"),
        (b'["a"]', 422, "body: "),
        (b"", 422, "body: "),
        (b'{"texts": ["ok", "\\ud800"]}', 422, "texts.1: not valid UTF-8"),
    ],
)
def test_a_clients_mistake_is_a_one_line_413_or_422_naming_the_field(api_url, body, status, field):
    got, answer, _ = _post(api_url, body)
    assert got == status and set(answer) == {"error"} and answer["error"].startswith(field), answer
    assert "\n" not in answer["error"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_haproxy_launcher_keeps_listeners_on_the_host_and_dies_with_its_parent(tmp_path):
    """What bioner's launcher adds to Ray's HAProxy, without Ray: wildcard `bind` lines move to --host
    (the frontend Ray already bound there is left alone), and the program it runs is ended when the
    process that started it dies (Ray's HAProxy manager, in real use)."""
    import subprocess

    from bioner.serve.ingress import write_launcher

    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "frontend prometheus\n    bind :9101\nfrontend http_frontend\n    bind 127.0.0.1:8000\n"
        "listen stats\n  bind *:8404\n"
    )
    pid_file = tmp_path / "pid"
    fake = tmp_path / "fake-haproxy"  # stands in for the binary: notes its pid, then waits
    fake.write_text(
        f"#!{sys.executable}\nimport os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    fake.chmod(0o700)
    launcher = write_launcher(tmp_path / "haproxy", str(fake), "127.0.0.1")
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(1)",
            str(launcher),
            "-db",
            "-f",
            str(cfg),
        ]
    )
    deadline = time.time() + 10
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert cfg.read_text().split("\n")[1::2] == [
        "    bind 127.0.0.1:9101",
        "    bind 127.0.0.1:8000",
        "  bind 127.0.0.1:8404",
    ]
    parent.wait(10)
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the program outlived the process that started it"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _post_documents(url, body):
    req = urllib.request.Request(
        url + "/documents", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def _bioc(doc_id, *passages):
    return {
        "id": doc_id,
        "infons": {},
        "relations": [],
        "passages": [
            {"offset": o, "infons": {"type": t}, "text": x, "annotations": [], "relations": []} for o, t, x in passages
        ],
    }


def test_documents_come_back_annotated_at_document_offsets_sentence_by_sentence(api_url):
    body = {
        "source": "test",
        "date": "",
        "key": "",
        "infons": {},
        "documents": [
            _bioc("1", (0, "title", "Gout. Measles."), (15, "abstract", "Flu.")),
            _bioc("2", (7, "x", "Asthma")),
        ],
    }
    status, answer, headers = _post_documents(api_url, body)
    assert status == 200 and headers.get(VERSION_HEADER) == "7" and answer["source"] == "test"
    got = [
        [(a["locations"][0]["offset"], a["text"], a["infons"]["type"]) for p in d["passages"] for a in p["annotations"]]
        for d in answer["documents"]
    ]
    # the stand-in tags the first three characters of every text it is sent: here every sentence
    assert got == [[(0, "Gou", "Disease"), (6, "Mea", "Disease"), (15, "Flu", "Disease")], [(7, "Ast", "Disease")]]


@pytest.mark.parametrize(
    "documents,status,field",
    [
        ([_bioc(str(i), (0, "t", "a")) for i in range(4)], 413, "documents: 4 documents, at most 3"),
        ([_bioc("1", (0, "t", "x" * 15), (16, "a", "y" * 10))], 413, "documents.0: 25 characters, at most 20"),
        ([{"id": "1"}], 422, "documents.0: "),
        ([_bioc("1", (0, "t", ""))], 422, "documents.0: "),
    ],
)
def test_a_bad_documents_request_is_one_line_naming_the_document(api_url, documents, status, field):
    got, answer, _ = _post_documents(api_url, {"documents": documents})
    assert got == status and set(answer) == {"error"} and answer["error"].startswith(field), answer


# --------------------------------------------------------------------------- chunked bodies, types, content types


def _chunked(url: str, path: str, chunks: list[bytes], finish: bool, content_type: str = "application/json"):
    """POST a chunked body (no Content-Length) over a raw socket; `finish=False` leaves the body open, so an
    answer can only come from a server that stopped reading at its limit."""
    import http.client
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for c in chunks:
            s.sendall(b"%x\r\n%s\r\n" % (len(c), c))
        if finish:
            s.sendall(b"0\r\n\r\n")
        r = http.client.HTTPResponse(s)
        r.begin()
        return r.status, json.loads(r.read())


@pytest.mark.parametrize("path, chunk, chunks", [("/predict", b"x" * 500, 4), ("/documents", b"x" * 4000, 5)])
def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(api_url, path, chunk, chunks):
    """A body without Content-Length is bounded as it arrives: the answer comes before the client has sent it all."""
    status, answer = _chunked(api_url, path, [b'{"texts": ["'] + [chunk] * chunks, finish=False)
    assert status == 413 and answer["error"].startswith("body: more than ") and "\n" not in answer["error"], answer


def test_a_chunked_body_within_the_limit_is_answered(api_url):
    body = json.dumps({"texts": ["measles here"]}).encode()
    status, answer = _chunked(api_url, "/predict", [body[:5], body[5:]], finish=True)
    assert status == 200 and answer == [[{"text": "mea", "start": 0, "end": 3, "type": "Disease"}]]


def test_types_that_name_no_type_are_a_422_naming_the_field(api_url):
    """`"types": []` names no type: an answer with no entities would look like a model that found none."""
    status, answer, _ = _post(api_url, json.dumps({"texts": ["measles here"], "types": []}).encode())
    assert status == 422 and answer["error"].startswith("types: names no type"), answer


@pytest.mark.parametrize(
    "content_type, said",
    [
        ("text/plain", "Content-Type 'text/plain'"),
        ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),  # curl -d without -H
        (None, "no Content-Type"),
    ],
)
def test_a_body_sent_without_a_json_content_type_is_a_422_that_says_so(api_url, content_type, said):
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(api_url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    conn.request(
        "POST",
        "/predict",
        body=json.dumps({"texts": ["measles"]}).encode(),
        headers={"Content-Type": content_type} if content_type else {},
    )
    r = conn.getresponse()
    answer = json.loads(r.read())
    conn.close()
    assert r.status == 422 and answer["error"].startswith("body: ") and said in answer["error"], answer
    assert "application/json" in answer["error"] and "\n" not in answer["error"]
    # JSON with its charset, or a +json type, is JSON
    assert _post(api_url, json.dumps({"texts": ["a"]}).encode(), "application/json; charset=utf-8")[0] == 200


@pytest.fixture(scope="module")
def roomy_api_url():
    """The routes with the default limits (a body of megabytes)."""
    import uvicorn

    server = StandIn(ServeConfig(model="m"))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(build_api(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


@pytest.mark.parametrize("path", ["/predict", "/documents"])
def test_json_nested_too_deeply_is_a_one_line_422(roomy_api_url, path):
    """JSON nested past what the parser takes is the client's mistake, said as such (FastAPI's own is a vague 400)."""
    depth = 100_000
    body = b'{"texts": ' + b"[" * depth + b"]" * depth + b"}"
    req = urllib.request.Request(roomy_api_url + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, answer = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        status, answer = e.code, json.loads(e.read())
    assert status == 422 and answer == {"error": "body: JSON nested too deeply to read"}, answer
