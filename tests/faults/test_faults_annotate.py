"""`bioner annotate` killed and resumed, as processes with a local Ray of their own: the driver SIGKILLed
mid-run and the same command run again (only the missing shards are tagged; every document once, the
rows those of an uninterrupted run), a Tagger actor SIGKILLed mid-run (Ray restarts it and the shard is
tagged again; the same rows), and a job submitted (`bioner submit -- annotate ...`) to a `ray start` head
and a second node on loopback, where both nodes take shards. The uninterrupted run's rows are
infer.documents.annotate's on each shard, which tests/integration/test_annotate.py shows the job's rows
to equal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _faultkit import VENV_BIN, clean_env, kill_group, wait_for

from helpers import EXPERIMENTS, save_random_model, session_pids, two_ray_nodes

pytestmark = pytest.mark.timeout(900)

NCBI = EXPERIMENTS / "corpora" / "NCBI-disease-PubTator" / "NCBItrainset_corpus.txt"
SHARDS, PER_SHARD = 24, 12


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("annotate") / "model"
    return str(save_random_model(folder, tiny_bert, max_length=64, seed=5, head_scale=50))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """SHARDS PubTator files of PER_SHARD NCBI abstracts each, under IDs of their own."""
    d = tmp_path_factory.mktemp("shards")
    blocks = [b for b in NCBI.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    for s in range(SHARDS):
        out = []
        for k in range(PER_SHARD):
            lines = blocks[(s * PER_SHARD + k) % len(blocks)].strip("\n").split("\n")[:2]  # title and abstract
            new = f"{s:02d}{k:03d}"
            out.append("\n".join(new + line[line.index("|") :] for line in lines))
        (d / f"part{s:02d}.pubtator").write_text("\n\n".join(out) + "\n\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def expected(model, corpus) -> list[tuple]:
    from bioner.data.formats import read_documents
    from bioner.infer.documents import annotate
    from bioner.infer.tagger import Tagger

    tagger = Tagger.load(model, precision="int8")
    rows = []
    for f in sorted(corpus.iterdir()):
        for d in annotate(tagger, list(read_documents(f, "pubtator"))):
            rows += [
                (d.id, i, m.start, m.end, m.text, m.type, m.score, str(f))
                for i, p in enumerate(d.passages)
                for m in p.mentions
            ]
    return sorted(rows)


def rows_of(out: Path) -> list[tuple]:
    import pyarrow.parquet as pq

    keys = ("doc_id", "passage", "start", "end", "text", "type", "score", "source_file")
    return sorted(
        tuple(r[k] for k in keys) for f in (out / "mentions").glob("*.parquet") for r in pq.read_table(f).to_pylist()
    )


def markers(out: Path) -> list[dict]:
    d = out / "_shards"
    return [json.loads(p.read_text()) for p in sorted(d.glob("shard-*.json"))] if d.is_dir() else []


def command(model: str, corpus: Path, out: Path, store: str, *extra: str) -> list[str]:
    return [
        str(VENV_BIN / "bioner"),
        "annotate",
        "--model",
        model,
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--tracking-uri",
        store,
        *extra,
    ]


def start(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=clean_env(**env),
        start_new_session=True,
    )


def gone(leader: int, timeout: float = 5) -> None:
    """Give the session's processes a moment to end (Ray's workers die with the driver; its agents take
    a minute), then end what is left of them."""
    deadline = time.monotonic() + timeout
    while session_pids(leader) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in session_pids(leader):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def check_complete(out: Path, expected: list[tuple]) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["shards_done"] == SHARDS
    assert manifest["documents"] == SHARDS * PER_SHARD  # every document once
    assert rows_of(out) == expected  # the rows of an uninterrupted run
    assert len(list((out / "mentions").glob("*.parquet"))) == SHARDS and not list(out.rglob(".tmp-*"))
    return manifest


def test_the_driver_killed_mid_run_then_the_same_command_finishes_only_the_missing_shards(
    no_ray_in_process, tmp_path, model, corpus, expected
):
    out, store = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = command(model, corpus, out, store, "--actors", "1")
    p = start(cmd, tmp_path / "first.log")
    wait_for(lambda: len(markers(out)) >= 3, 300, "three shards done", proc=p, every=0.05)
    os.kill(p.pid, signal.SIGKILL)  # the driver only: its local Ray goes down with it
    p.wait(timeout=30)
    gone(p.pid)
    done = len(markers(out))
    assert 3 <= done < SHARDS, done
    first = json.loads((out / "manifest.json").read_text())
    assert first["status"] == "running"

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"{done} of {SHARDS} shards done already" in r.stderr
    assert f"({SHARDS - done} this time" in r.stdout
    manifest = check_complete(out, expected)
    assert manifest["run_id"] == first["run_id"] and len(manifest["sessions"]) == 2  # the same MLflow run, continued
    from mlflow import MlflowClient

    run = MlflowClient(store).get_run(manifest["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["documents"] == SHARDS * PER_SHARD
    print(
        f"driver killed after {done} of {SHARDS} shards; the resumed run tagged {SHARDS - done}; "
        f"{manifest['documents']} documents, {manifest['mentions']} mentions"
    )


def test_a_tagger_actor_killed_mid_run_is_restarted_and_the_job_finishes_with_the_same_rows(
    no_ray_in_process, tmp_path, model, corpus, expected
):
    out, store = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = start(command(model, corpus, out, store, "--actors", "1"), tmp_path / "job.log")
    try:
        first = wait_for(lambda: markers(out), 300, "a shard done", proc=p, every=0.05)[0]
        os.kill(first["pid"], signal.SIGKILL)
        killed_at = time.time()
        assert p.wait(timeout=600) == 0, (tmp_path / "job.log").read_text()[-4000:]
    finally:
        kill_group(p)
    check_complete(out, expected)
    after = [m for m in markers(out) if m["finished_at"] > killed_at]
    assert after and {m["pid"] for m in after} != {first["pid"]}  # shards after the kill: a new actor process


def test_submitted_to_a_head_and_a_second_node_both_nodes_take_shards(
    no_ray_in_process, tmp_path, model, corpus, expected
):
    env = {"RAY_AUTH_MODE": "disabled"}
    with two_ray_nodes(tmp_path, clean_env(**env)) as nodes:
        out, store = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
        (tmp_path / "job").mkdir()  # the job's working directory: every path below is absolute
        job = command(model, corpus, out, store)[1:]
        submit = [
            str(VENV_BIN / "bioner"),
            "submit",
            "--address",
            nodes.dashboard,
            "--working-dir",
            str(tmp_path / "job"),
            "--",
            *job,
        ]
        r = subprocess.run(submit, capture_output=True, text=True, timeout=600, env=clean_env(**env))
        assert r.returncode == 0 and "SUCCEEDED" in r.stdout, (r.stdout + r.stderr)[-4000:]
        assert "2 Tagger actors" in r.stdout
        check_complete(out, expected)
        per_node: dict[str, int] = {}
        for m in markers(out):
            per_node[m["node"]] = per_node.get(m["node"], 0) + m["documents"]
        assert len(per_node) == 2 and all(per_node.values()), per_node
        print(f"documents per node: {sorted(per_node.values())}")
