"""Helpers of the test suite: paths of the checkout, writers of corpora and dataset specs, untrained
models (a folder and its MLflow pyfunc), and threads that run clients side by side.

Tests take datasets from the `make_dataset` fixture (conftest.py); these functions are for the
cases it does not cover (odd corpus layouts, hand-written lines).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
NCBI = EXPERIMENTS / "corpora" / "NCBI-disease"


def write_corpus(folder: Path, splits: dict[str, str]) -> Path:
    """train.tsv, devel.tsv, test.tsv from literal text (dedented)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in splits.items():
        (folder / f"{name}.tsv").write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def write_spec(path: Path, corpus: str, types=("Disease",), name: str = "toy") -> Path:
    """A dataset spec naming `corpus` (relative to the spec) with a query of every source per type."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", f"corpus: {corpus}", "entity_types:"]
    for t in types:
        lines += [
            f"  {t}:",
            f'    wikipedia: "A {t.lower()} is a thing."',
            f'    annotation: "A {t.lower()} entity is a mention of a {t.lower()}."',
            '    dictionary: "Can you detect entities like {examples} ?"',
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ncbi_subset(dst: Path, n_train: int, n_test: int) -> Path:
    """The first sentences of each NCBI-disease split, as a corpus folder."""
    from bioner.data.iob import iter_sentences

    dst.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("devel", max(1, n_test // 2)), ("test", n_test)):
        with open(dst / f"{split}.tsv", "w", encoding="utf-8") as f:
            for i, (toks, tags) in enumerate(iter_sentences(NCBI / f"{split}.tsv", ["Disease"])):
                if i >= n:
                    break
                f.write("".join(f"{a}\t{b}\n" for a, b in zip(toks, tags, strict=True)) + "\n")
    return dst


# Entity names of the synthetic corpora, per type: single words and two-word names.
NAMES = {
    "Disease": (
        ["flu", "measles", "gout", "asthma", "rickets", "malaria"],
        [("lyme", "disease"), ("hay", "fever"), ("sickle", "anemia")],
    ),
    "Chemical": (
        ["aspirin", "ethanol", "cisplatin", "heparin", "lithium", "caffeine"],
        [("nitric", "oxide"), ("folic", "acid")],
    ),
}


def synthetic_corpus(dst: Path, sizes=(200, 60, 200), seed: int = 0, entity: str = "Disease") -> Path:
    """A corpus a tiny model learns in a few epochs: names of one entity type (NAMES) in filler text."""
    rng = random.Random(seed)
    filler = "the a patient was seen with and of in treated for history reported no signs".split()
    single, double = NAMES[entity]
    dst.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "devel", "test"), sizes, strict=True):
        lines = []
        for _ in range(n):
            rows = []
            for _ in range(rng.randint(4, 14)):
                r = rng.random()
                if r < 0.12:
                    rows.append((rng.choice(single), f"B-{entity}"))
                elif r < 0.18:
                    a, b = rng.choice(double)
                    rows += [(a, f"B-{entity}"), (b, f"I-{entity}")]
                else:
                    rows.append((rng.choice(filler), "O"))
            lines.append("\n".join(f"{w}\t{t}" for w, t in rows))
        (dst / f"{split}.tsv").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    return dst


def trial_runs_in_store(db: Path, experiment: str) -> list[tuple[str, str]]:
    """(run id, Ray trial id) of an experiment's trial runs, oldest first, read from the SQLite
    store of a job that is still running, without MLflow: an MlflowClient opened while the job
    creates the store runs the schema migrations a second time, and the job dies of it
    ("duplicate column name"). Empty while the store or the experiment does not exist yet."""
    if not db.exists():
        return []
    try:  # closing(): a sqlite3 connection's own `with` ends a transaction, it does not close
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute(
                "SELECT r.run_uuid, tid.value FROM runs r"
                " JOIN experiments e ON e.experiment_id = r.experiment_id"
                " JOIN tags kind ON kind.run_uuid = r.run_uuid AND kind.key = 'bioner.kind' AND kind.value = 'trial'"
                " JOIN tags tid ON tid.run_uuid = r.run_uuid AND tid.key = 'ray.trial_id'"
                " WHERE e.name = ? ORDER BY r.start_time, r.run_uuid",
                (experiment,),
            ).fetchall()
    except sqlite3.Error:  # tables not there yet, or locked by the job for a moment
        return []


def free_ports(n: int) -> list[int]:
    """Free loopback ports outside 10002-19999, which Ray keeps for its workers."""
    import socket

    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        if not 10002 <= s.getsockname()[1] <= 19999:
            ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def session_pids(leader: int) -> list[int]:
    """The live processes of the process session `leader` started (start_new_session=True)."""
    import subprocess

    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout
    return [
        int(p)
        for p, s, st in (line.split()[:3] for line in out.splitlines())
        if int(s) == leader and not st.startswith("Z")
    ]


def is_loopback(ip: str) -> bool:
    """127.0.0.1, ::1, or IPv4 loopback written as IPv6 (::ffff:127.0.0.1)."""
    import ipaddress

    a = ipaddress.ip_address(ip)
    return a.is_loopback or bool(getattr(a, "ipv4_mapped", None) and a.ipv4_mapped.is_loopback)


def save_random_model(
    folder: Path,
    encoder: str,
    max_length: int = 128,
    seed: int | None = None,
    head_scale: float | None = None,
    dataset: str = "toy",
) -> Path:
    """An untrained Disease model folder on `encoder` (random heads): inference needs no training.
    `seed` fixes the heads; `head_scale` multiplies the token head's weights, for large logit
    margins that put entities at arbitrary words and that no rounding flips (a decisive model)."""
    import torch

    from bioner.model import ModelMeta, build_model, load_tokenizer, save_model

    meta = ModelMeta(
        labels=["O", "B-Disease", "I-Disease"],
        types=["Disease"],
        dataset=dataset,
        encoder=encoder,
        max_length=max_length,
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(encoder, meta.num_labels)
    if head_scale is not None:
        with torch.no_grad():
            model.ner_head.weight.mul_(head_scale)
    return save_model(model, load_tokenizer(encoder), folder, meta)


def save_pyfunc(path: Path, model_folder: Path, python_model: Path | None = None, **options: Any) -> Path:
    """`model_folder` saved as an MLflow pyfunc model at `path`, as a training run logs it (bioner's
    entry file, the folder as its `model` artifact, its requirements); `python_model` is another
    entry file, `options` go to mlflow.pyfunc.save_model (e.g. model_config)."""
    import mlflow.pyfunc

    from bioner.tracking.models import MODEL_CODE, pip_requirements

    mlflow.pyfunc.save_model(
        str(path),
        python_model=str(python_model or MODEL_CODE),
        artifacts={"model": str(model_folder)},
        pip_requirements=pip_requirements(),
        **options,
    )
    return path


@contextlib.contextmanager
def in_threads(*targets: Callable[[], object], join_s: float | None = None) -> Iterator[None]:
    """Each target in a thread of its own, all started on entry and joined on exit (at most
    `join_s` each), also when the block raises."""
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for t in threads:
            t.join(join_s)


def run_concurrently(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Every call at once, each in a thread of its own; their results, in order."""
    results: list[Any] = [None] * len(calls)

    def runner(k: int) -> Callable[[], None]:
        def run() -> None:
            results[k] = calls[k]()

        return run

    with in_threads(*(runner(k) for k in range(len(calls)))):
        pass
    return results


@contextlib.contextmanager
def client_threads(n: int, request: Callable[[int], object], join_s: float = 60) -> Iterator[None]:
    """`n` clients under load while the block runs: each calls request(0), request(1), ... until the
    block ends, when they are stopped and joined."""
    stop = threading.Event()

    def client() -> None:
        i = 0
        while not stop.is_set():
            request(i)
            i += 1

    with in_threads(*[client] * n, join_s=join_s):
        try:
            yield
        finally:
            stop.set()


class Outcome(NamedTuple):
    code: int
    stdout: str
    stderr: str


def bioner(*args: str) -> Outcome:
    """`bioner ARGS` through its console entry point (cli.main) in this process."""
    import io
    import sys
    from contextlib import redirect_stderr, redirect_stdout

    from bioner.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["bioner", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue())


def tune_smoke_args(spec: Path, encoder: str, out: Path, experiment: str) -> list[str]:
    """`bioner tune` arguments (after the command) for a two-trial search on experiments/tune-smoke.yaml
    that refits one seed and registers nothing."""
    sets = [f"dataset={spec}", f"encoder={encoder}", f"output_dir={out}", f"experiment={experiment}"]
    sets += ["train_fraction=1.0", "num_samples=2", "max_epochs=1", "refit_seeds=1", "max_length=48", "register=false"]
    return ["tune", str(EXPERIMENTS / "tune-smoke.yaml"), "-q", *(x for s in sets for x in ("--set", s))]


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
    Not the 30 s a node may drain for: nothing runs on it any more."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        left = session_pids(proc.pid)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(2)


@dataclass
class RayNodes:
    dashboard: str  # http://127.0.0.1:PORT, for Ray Jobs and the State API
    address: str  # 127.0.0.1:PORT, the head's GCS, for --address
    temp_dir: Path


@contextlib.contextmanager
def two_ray_nodes(log_dir: Path, env: dict, cpus: int = 1, start_s: float = 180) -> Iterator[RayNodes]:
    """A Ray head and a second node joined to it, `cpus` CPUs each, on this host (as Ray's own multi-node
    tests run them: both share one temp dir), every port chosen free. `env` is the nodes' whole
    environment. Both are stopped by process id at the end."""
    import shutil
    import sys
    import tempfile

    temp_dir = Path(tempfile.mkdtemp(prefix="bn", dir="/tmp"))  # Ray's socket paths must stay short
    gcs, dash, client, *ports = free_ports(15)
    procs: list[subprocess.Popen] = []

    def node(args: list[str], port_values: list[int], log: Path) -> None:
        own = [x for name, port in zip(_NODE_PORT_OPTIONS, port_values, strict=True) for x in (name, str(port))]
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [ray, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1", "--num-cpus"]
        p = subprocess.Popen(
            [*cmd, str(cpus), *args, *own],
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        procs.append(p)
        deadline = time.monotonic() + start_s
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not start a node: {log}")
            time.sleep(1)

    try:
        head = ["--head", "--port", str(gcs), "--temp-dir", str(temp_dir), "--dashboard-host", "127.0.0.1"]
        head += ["--dashboard-port", str(dash), "--ray-client-server-port", str(client)]
        node(head, ports[:6], log_dir / "head.log")
        node(["--address", f"127.0.0.1:{gcs}"], ports[6:12], log_dir / "node2.log")
        yield RayNodes(f"http://127.0.0.1:{dash}", f"127.0.0.1:{gcs}", temp_dir)
    finally:
        for p in reversed(procs):
            stop_session(p)
        shutil.rmtree(temp_dir, ignore_errors=True)
