"""The serving load test (`make loadtest`): `bioner serve` with 1 and 2 replicas and `mlflow models
serve` on the same registered model and the same NCBI-disease test sentences, at 1, 8 and 32
concurrent clients (locust, headless, 127.0.0.1 only, each cell bounded in time and in requests);
then a run at 8 clients during which `bioner promote --force` moves the alias three times, with
every answer checked: no failed request, and each answer from the version the alias named when
the request was sent, or a later one.

Writes <out>/<UTC time>/results.json (and the locust CSVs, the servers' logs, every request of
the promotion run) and prints a table. The model is registered in a fresh SQLite store of that
folder: by default the MiniLM encoder with a seeded random head (the prediction benchmark's
model), or --model FOLDER (a trained model, e.g. outputs/models/<run_id>).

    python experiments/benchmarks/loadtest.py                      # the full table
    python experiments/benchmarks/loadtest.py --duration 5 --clients 1,8 --replicas 1 \\
        --mlflow-workers 1 --moves 1                               # a smoke run of the harness
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
BIN = Path(sys.executable).parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    p.add_argument(
        "--out", type=Path, default=REPO / "outputs" / "loadtest", help="results folder (a sub-folder per run)"
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a bioner model folder (default: the encoder with a seeded random head)",
    )
    p.add_argument("--encoder", default="minilm", help="encoder of the random-head model")
    p.add_argument(
        "--dataset", default="ncbi-disease", help="its test sentences are the texts; the model is bioner-<dataset>"
    )
    p.add_argument("--clients", type=ints, default=[1, 8, 32], help="concurrent clients per cell, comma-separated")
    p.add_argument("--replicas", type=ints, default=[1, 2], help="bioner serve replicas, comma-separated (empty: skip)")
    p.add_argument(
        "--ingress",
        type=lambda s: [x for x in s.split(",") if x.strip()],
        default=["haproxy"],
        help="bioner serve --ingress values, comma-separated (haproxy: Ray's HAProxy mode, the default on Linux; "
        "proxy: Serve's proxy)",
    )
    p.add_argument(
        "--mlflow-workers", type=ints, default=[1], help="mlflow models serve -w values (empty: skip; its default is 1)"
    )
    p.add_argument(
        "--duration", type=float, default=30.0, help="seconds a cell measures (after all its clients started)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times every system is measured, in turn (cells of 2 shared cores vary by about 20 %%)",
    )
    p.add_argument("--max-requests", type=int, default=20_000, help="requests a cell sends at most")
    p.add_argument("--texts-per-request", type=int, default=1, help="sentences in one request")
    p.add_argument("--moves", type=int, default=3, help="alias moves of the promotion run (0: skip it)")
    p.add_argument("--move-clients", type=int, default=8, help="clients of the promotion run")
    p.add_argument("--move-replicas", type=int, default=2, help="bioner serve replicas of the promotion run")
    p.add_argument("--move-gap", type=float, default=5.0, help="seconds of load before, between and after the moves")
    p.add_argument("--move-max-requests", type=int, default=200_000, help="requests the promotion run sends at most")
    p.add_argument("--poll-s", type=float, default=2.0, help="bioner serve --poll-s")
    p.add_argument(
        "--serve-args", default="", help='more options of bioner serve, e.g. "--batch-wait-ms 5 --no-check-alias"'
    )
    p.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds a server may take to answer its health check"
    )
    return p.parse_args(argv)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the model in a fresh registry -------------------------------------------------------------


def register_model(args, folder: Path, store: str) -> dict:
    """Log the model folder as bioner's MLflow model, register it, make it champion."""
    import mlflow

    from bioner.bench.config import BenchConfig
    from bioner.bench.predict import random_head_model
    from bioner.tracking.models import log_model
    from bioner.tracking.registry import promote, register_challenger

    if args.model is None:
        model_dir = random_head_model(BenchConfig(dataset=args.dataset, encoder=args.encoder), folder / "model")
    else:
        model_dir = args.model.resolve()
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient(store)
    # artifacts beside the store: MLflow's default is ./mlruns in the working directory
    experiment = client.create_experiment("loadtest", artifact_location=(folder / "artifacts").resolve().as_uri())
    with mlflow.start_run(experiment_id=experiment, run_name="loadtest-model"):
        model_uri = log_model(model_dir).model_uri
    version = register_challenger(client, args.dataset, model_uri, "load test", {})
    assert promote(args.dataset, tracking_uri=store, progress=False).promoted
    return {"folder": str(model_dir), "model_uri": model_uri, "first_version": version, "client": client}


def write_texts(args, folder: Path) -> Path:
    from bioner.data.iob import read_split
    from bioner.data.specs import load_spec

    texts = [" ".join(t) for t in read_split(load_spec(args.dataset), "test").tokens]
    path = folder / "texts.json"
    path.write_text(json.dumps(texts), encoding="utf-8")
    return path


# -- servers -----------------------------------------------------------------------------------


class Server:
    """A server process in its own session, stopped with SIGTERM (both servers shut down cleanly on it;
    a shell's background job ignores SIGINT), then SIGKILL."""

    def __init__(self, name: str, cmd: list[str], port: int, health: str, log: Path, env: dict):
        self.name, self.port, self.health = name, port, health
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self._log.name}")
            try:
                urllib.request.urlopen(self.url + self.health, timeout=5).read()
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"{self.name} did not answer {self.health} in {timeout:.0f} s; see {self._log.name}")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()


def bioner_serve(args, store: str, replicas: int, folder: Path, ingress: str = "haproxy") -> Server:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bioner.cli",
        "serve",
        "--model",
        f"models:/bioner-{args.dataset}@champion",
        "--replicas",
        str(replicas),
        "--port",
        str(port),
        "--tracking-uri",
        store,
        "--poll-s",
        str(args.poll_s),
        "--ingress",
        ingress,
        *shlex.split(args.serve_args),
    ]
    return Server(
        f"bioner serve ({ingress}), {replicas} replica(s)",
        cmd,
        port,
        "/health",
        folder / f"bioner-serve-{ingress}-{replicas}.log",
        dict(os.environ),
    )


def mlflow_serve(args, store: str, workers: int, folder: Path) -> Server:
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/bioner-{args.dataset}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(workers),
    ]
    # the scoring server starts `uvicorn` by name: the venv's bin goes first on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return Server(f"mlflow models serve -w {workers}", cmd, port, "/ping", folder / f"mlflow-serve-{workers}.log", env)


def bioner_serve_with(ingress: str):
    return lambda args, store, replicas, folder: bioner_serve(args, store, replicas, folder, ingress)


# -- locust ------------------------------------------------------------------------------------


def run_locust(
    args,
    user: str,
    url: str,
    clients: int,
    duration: float,
    texts: Path,
    prefix: Path,
    log: Path | None = None,
    stop_file: Path | None = None,
    max_requests: int | None = None,
) -> dict:
    env = {
        **os.environ,
        "LOADTEST_TEXTS": str(texts),
        "LOADTEST_TEXTS_PER_REQUEST": str(args.texts_per_request),
        "LOADTEST_MAX_REQUESTS": str(max_requests or args.max_requests),
    }
    if log:
        env["LOADTEST_LOG"] = str(log)
    if stop_file:
        env["LOADTEST_STOP_FILE"] = str(stop_file)
    cmd = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        user,
        "--headless",
        "-u",
        str(clients),
        "-r",
        str(clients),
        "-t",
        f"{int(duration)}s",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--reset-stats",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "30",
        "--exit-code-on-error",
        "0",
    ]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=duration + 180)
    if done.returncode != 0:
        raise RuntimeError(f"locust failed ({done.returncode}): {done.stderr[-2000:]}")
    return read_stats(prefix) | {"clients": clients, "load_average_1m_before": load_before}


def read_stats(prefix: Path) -> dict:
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    num = lambda k: float(row[k]) if row[k] not in ("", "N/A") else None  # noqa: E731
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "requests_per_s": num("Requests/s"),
        "p50_ms": num("50%"),
        "p99_ms": num("99%"),
        "mean_ms": num("Average Response Time"),
    }


def warm_up(args, user: str, url: str, texts: Path, folder: Path) -> None:
    """A few seconds of load before a server's first cell: first batches allocate, threads spin up."""
    run_locust(args, user, url, 4, 3, texts, folder / "warmup")


def measure(args, server: Server, user: str, texts: Path, folder: Path, tag: str) -> list[dict]:
    server.wait_ready(args.start_timeout)
    warm_up(args, user, server.url, texts, folder)
    cells = []
    for clients in args.clients:
        cell = run_locust(args, user, server.url, clients, args.duration, texts, folder / f"{tag}-c{clients}")
        cell["texts_per_s"] = (cell["requests_per_s"] or 0) * args.texts_per_request
        cells.append({"system": server.name, **cell})
        print(
            f"  {server.name}, {clients} clients: {cell['requests_per_s']} req/s, p50 {cell['p50_ms']} ms, "
            f"p99 {cell['p99_ms']} ms, {cell['failures']} failed",
            flush=True,
        )
    return cells


# -- the promotion run -------------------------------------------------------------------------


def move_alias(args, store: str, reg: dict, folder: Path, timeline: list, errors: list, n: int) -> None:
    """Register one more version as challenger, then `bioner promote --force` it; note when it ran."""
    from bioner.tracking.registry import register_challenger

    version = register_challenger(reg["client"], args.dataset, reg["model_uri"], f"load test move {n}", {})
    cmd = [
        sys.executable,
        "-m",
        "bioner.cli",
        "promote",
        "--dataset",
        args.dataset,
        "--force",
        "--reason",
        f"load test: alias move {n} under load",
        "--tracking-uri",
        store,
    ]
    started = time.time()
    with open(folder / f"promote-{n}.log", "w", encoding="utf-8") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    timeline.append({"version": version, "promote_started": started, "promote_done": time.time()})
    if rc != 0:
        errors.append(f"bioner promote exited {rc}; see promote-{n}.log")


def allowed_versions(sent: float, first: str, timeline: list[dict]) -> set[str]:
    """What the alias named at `sent` or later; a move counts from when `bioner promote` returned."""
    named = [first] + [m["version"] for m in timeline]
    current = sum(1 for m in timeline if m["promote_done"] <= sent)
    return set(named[current:])


def promotion_run(args, store: str, reg: dict, texts: Path, folder: Path) -> dict:
    server = bioner_serve(args, store, args.move_replicas, folder, args.ingress[0])
    timeline, errors = [], []
    log, stop_file = folder / "promotion-requests.jsonl", folder / "promotion.stop"
    try:
        server.wait_ready(args.start_timeout)
        warm_up(args, "BioNERServe", server.url, texts, folder)
        first = json.loads(urllib.request.urlopen(server.url + "/model", timeout=30).read())["version"]

        def moves():
            for n in range(1, args.moves + 1):
                time.sleep(args.move_gap)
                move_alias(args, store, reg, folder, timeline, errors, n)
            time.sleep(args.move_gap)
            stop_file.touch()

        mover = threading.Thread(target=moves)
        mover.start()
        budget = 3600  # the mover ends the run (stop file) once its moves are done; --max-requests bounds it too
        stats = run_locust(
            args,
            "BioNERServe",
            server.url,
            args.move_clients,
            budget,
            texts,
            folder / "promotion",
            log,
            stop_file,
            args.move_max_requests,
        )
        mover.join()
        model_info = json.loads(urllib.request.urlopen(server.url + "/model", timeout=30).read())
    finally:
        server.stop()
    return check_promotion_run(log, first, timeline, errors, stats, model_info)


def check_promotion_run(
    log: Path, first: str, timeline: list[dict], errors: list, stats: dict, model_info: dict
) -> dict:
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    failed = [r for r in records if r["status"] != 200]
    stale = [
        r for r in records if r["status"] == 200 and r["version"] not in allowed_versions(r["sent"], first, timeline)
    ]
    by_version: dict[str, int] = {}
    for r in records:
        by_version[str(r["version"])] = by_version.get(str(r["version"]), 0) + 1
    for m in timeline:  # when the first answer came from the new version, counted from the start of `bioner promote`
        firsts = [r["done"] for r in records if r["version"] == m["version"]]
        m["first_answer_s"] = round(min(firsts) - m["promote_started"], 3) if firsts else None
    if not timeline:
        errors.append("no alias move completed")
    after_last = [r for r in records if timeline and r["sent"] >= timeline[-1]["promote_done"]]
    if timeline and not after_last:
        errors.append("no request was sent after the last move: the run ended too early")
    return {
        "clients": stats["clients"],
        "requests": len(records),
        "failed": len(failed),
        "stale": len(stale),
        "requests_after_last_move": len(after_last),
        "answers_by_version": by_version,
        "first_version": first,
        "moves": timeline,
        "errors": errors,
        "locust": stats,
        "switches_seen_by_one_replica": model_info.get("history"),
        "examples_failed": failed[:5],
        "examples_stale": stale[:5],
    }


# -- the run -----------------------------------------------------------------------------------


def print_table(results: dict) -> None:
    print("\n| system | clients | requests/s | texts/s | p50 (ms) | p99 (ms) | failed | load before |")
    print("|---|---|---|---|---|---|---|---|")
    f = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731  (a cell that measured nothing)
    for c in results["cells"]:
        print(
            f"| {c['system']} | {c['clients']} | {f(c['requests_per_s'], '.1f')} | {f(c['texts_per_s'], '.1f')} | "
            f"{f(c['p50_ms'], '.0f')} | {f(c['p99_ms'], '.0f')} | {c['failures']} | {c['load_average_1m_before']:.2f} |"
        )
    if results["args"].get("rounds", "1") != "1":
        print("\n| system | clients | rounds | requests/s, mean (min-max) | p99 (ms), mean |")
        print("|---|---|---|---|---|")
        groups: dict = {}
        for c in results["cells"]:
            groups.setdefault((c["system"], c["clients"]), []).append(c)
        for (system, clients), cs in groups.items():
            rps = [c["requests_per_s"] or 0 for c in cs]
            p99 = [c["p99_ms"] for c in cs if c["p99_ms"] is not None]
            print(
                f"| {system} | {clients} | {len(cs)} | {sum(rps) / len(rps):.1f} ({min(rps):.1f}-{max(rps):.1f}) | "
                f"{f(sum(p99) / len(p99) if p99 else None, '.0f')} |"
            )
    p = results.get("promotion")
    if p:
        moves = ", ".join(
            f"-> v{m['version']} (promote ran {m['promote_done'] - m['promote_started']:.1f} s; first answer "
            f"from v{m['version']} {m['first_answer_s']} s after it started)"
            for m in p["moves"]
        )
        print(
            f"\npromotion run, {p['clients']} clients: {p['requests']} requests ({p['requests_after_last_move']} after "
            f"the last move), {p['failed']} failed, {p['stale']} answered by a version older than the alias named; "
            f"v{p['first_version']} {moves}; answers by version {p['answers_by_version']}"
            + (f"; problems: {p['errors']}" if p["errors"] else "")
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    folder = args.out / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True)
    store = f"sqlite:///{folder.resolve() / 'mlflow.db'}"
    print(f"load test in {folder}", flush=True)
    reg = register_model(args, folder, store)
    texts = write_texts(args, folder)
    results = {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "model": {k: v for k, v in reg.items() if k != "client"},
        "cells": [],
    }
    systems = [
        (bioner_serve_with(i), r, "BioNERServe", f"bioner-{i}-r{r}") for i in args.ingress for r in args.replicas
    ]
    systems += [(mlflow_serve, w, "MLflowServe", f"mlflow-w{w}") for w in args.mlflow_workers]
    for round_ in range(1, args.rounds + 1):
        for start, n, user, tag in systems:
            server = start(args, store, n, folder)
            try:
                cells = measure(args, server, user, texts, folder, f"{tag}-round{round_}" if args.rounds > 1 else tag)
                results["cells"] += [{**c, "round": round_} for c in cells]
            finally:
                server.stop()
    if args.moves:
        results["promotion"] = promotion_run(args, store, reg, texts, folder)
    results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print_table(results)
    print(f"\nresults: {folder / 'results.json'}")
    p = results.get("promotion")
    return 1 if p and (p["failed"] or p["stale"] or p["errors"]) else 0


if __name__ == "__main__":
    sys.exit(main())
