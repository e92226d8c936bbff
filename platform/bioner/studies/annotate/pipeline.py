"""The Ray Data pipeline of a job and the driver's side of it: the rows of the shards followed as they come.

    from_items(pending shards) -> map(read_stage)            Ray tasks: read, check, hash a shard
                               -> map_batches(TaggerActor)   a pool of actors: tag, write, mark
                               -> iter_rows()                the driver: one row of figures per shard

A shard read while another is tagged overlaps the two; reading takes no CPU slot of its own (its
tasks are few and short beside tagging), so every CPU can hold a tagger. Shards read ahead of the
actors wait in the object store, within the budget Ray Data's backpressure gives the read stage (it
stops reading when that is used up): memory stays bounded whatever the corpus's size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path

from ...infer.text import max_text_chars
from ...train.local_ray import ensure_ray
from . import manifest as mf
from .inputs import BadRecord, documents_names
from .modelref import pack
from .options import AnnotateOptions, AnnotateResult
from .output import ERRORS, OutputDir
from .progress import Progress, human
from .record import client_of
from .stages import TaggerActor, read_stage

METRICS_EVERY_S = 5.0


class Stop(Exception):
    """The job stops with this one line (a bad record, too many of them); `bad`: the records of the shard
    that stopped it, which no marker holds."""

    def __init__(self, message: str, bad: list[BadRecord] | None = None):
        super().__init__(message)
        self.bad = bad or []


def run_pipeline(
    o: AnnotateOptions,
    out: OutputDir,
    shards,
    pending,
    markers: dict[int, dict],
    folder: Path,
    run_id: str,
    result: AnnotateResult,
    say,
) -> None:
    """Tag the `pending` shards; `markers` gains each shard's as it is done."""
    import ray  # lazy (platform/README.md)
    from ray.data import TaskPoolStrategy  # lazy (platform/README.md)

    if o.address:
        os.environ["RAY_ADDRESS"] = o.address
    ensure_ray()
    _quiet_ray_data()
    gpus = o.gpus_per_actor
    cpus = o.cpus_per_actor or 1.0
    pool = _pool(o, cpus, gpus, len(pending))
    digest, files = pack(folder)
    model_ref = ray.put(files)
    del files
    names = documents_names(shards)
    items = [
        {"index": s.index, "path": s.path, "size": s.size, "format": s.format, "out_name": names[s.index]}
        for s in pending
    ]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # No CPU slot for reading (see the module's docstring); as many shards read at once as there are actors.
    ds = ds.map(
        read_stage,
        fn_kwargs={"max_chars": max_text_chars(), "max_errors": o.max_errors},
        num_cpus=0,
        compute=TaskPoolStrategy(size=max(1, pool.max_size if math.isfinite(pool.max_size) else pool.min_size)),
    )
    ds = ds.map_batches(
        TaggerActor,
        batch_size=1,
        compute=pool,
        num_cpus=cpus,
        num_gpus=gpus or None,
        fn_constructor_kwargs={
            "model": [model_ref],
            "digest": digest,
            "out": out,
            "output_format": o.output_format,
            "types": o.types,
            "cpus": cpus,
            "gpus": gpus,
            "batch_size": o.batch_size,
        },
    )
    say(
        f"annotate: {len(pending)} shard(s) to tag ({human(sum(s.size for s in pending))}), "
        f"{_pool_words(pool)} of {cpus:g} CPU{'s' if cpus != 1 else ''}" + (f" and {gpus:g} GPU" if gpus else "")
    )
    _follow(o, ds, shards, markers, run_id, result, say)


def _pool(o: AnnotateOptions, cpus: float, gpus: float, shards: int):
    """--actors, or --min/--max-actors, else as many as the cluster's CPUs (GPUs) hold, never more than shards."""
    import ray  # lazy (platform/README.md)
    from ray.data import ActorPoolStrategy  # lazy (platform/README.md)

    if o.actors is not None:
        return ActorPoolStrategy(size=o.actors, max_tasks_in_flight_per_actor=1)
    if o.min_actors is not None or o.max_actors is not None:
        lo = o.min_actors or 1
        return ActorPoolStrategy(min_size=lo, max_size=max(lo, o.max_actors or lo), max_tasks_in_flight_per_actor=1)
    have = ray.cluster_resources()
    n = int(have.get("GPU", 0) // gpus) if gpus else int(have.get("CPU", 1) // cpus)
    return ActorPoolStrategy(size=max(1, min(n, shards)), max_tasks_in_flight_per_actor=1)


def _pool_words(pool) -> str:
    if pool.min_size == pool.max_size:
        return f"{pool.min_size} Tagger actor{'s' if pool.min_size != 1 else ''}"
    return f"{pool.min_size} to {pool.max_size} Tagger actors"


def _quiet_ray_data() -> None:
    from ray.data import DataContext  # lazy (platform/README.md)

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the job's own bar counts documents and bytes
    for name in ("ray.data", "ray.data._internal.progress"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _follow(o: AnnotateOptions, ds, shards, markers: dict[int, dict], run_id: str, result: AnnotateResult, say) -> None:
    """Take each shard's row as it comes: totals, progress, metrics; stop at a row that must end the job."""
    from mlflow.entities import Metric  # lazy (platform/README.md)

    client = client_of(o)
    total_bytes = sum(s.size for s in shards)
    done_bytes = sum(int(m.get("size", 0)) for m in markers.values())
    bad_before = sum(int(m.get("errors", 0)) for m in markers.values())
    bar = Progress(total_bytes, done_bytes, o.progress, say)
    t0, last_metrics = time.perf_counter(), 0.0
    rows = iter(ds.iter_rows())
    try:
        for row in rows:
            row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            _check_row(o, row, bad_before)
            bad_before += len(_bad_of(row))
            markers[row["index"]] = _marker_of(row)
            result.documents_now += row["documents"]
            result.nodes[row["node"]] = result.nodes.get(row["node"], 0) + row["documents"]
            elapsed = time.perf_counter() - t0
            rate = result.documents_now / elapsed if elapsed > 0 else 0.0
            bar.update(row["size"], result.documents_now, rate, len(markers), len(shards))
            if time.perf_counter() - last_metrics >= METRICS_EVERY_S or len(markers) == len(shards):
                last_metrics = time.perf_counter()
                step, ms = len(markers), int(time.time() * 1000)
                t = mf.totals(list(markers.values()))
                client.log_batch(
                    run_id,
                    metrics=[
                        Metric("documents_done", t["documents"], ms, step),
                        Metric("documents_per_s_now", rate, ms, step),
                        Metric("mentions_done", t["mentions"], ms, step),
                        Metric("shards_done", step, ms, step),
                        Metric("errors_done", t["errors"], ms, step),
                    ],
                )
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            # stops the pipeline: its actors end instead of tagging shards no one waits for
            rows.close()  # type: ignore[attr-defined]


def _bad_of(row: dict) -> list[BadRecord]:
    return [BadRecord(**b) for b in json.loads(row["bad"])]


def _check_row(o: AnnotateOptions, row: dict, bad_before: int) -> None:
    bad = _bad_of(row)
    if o.max_errors is None:
        if row["fatal"]:
            raise Stop(row["fatal"])
        return
    if bad_before + len(bad) > o.max_errors:
        first = bad[o.max_errors - bad_before] if o.max_errors - bad_before < len(bad) else bad[-1]
        raise Stop(
            f"{first.message()} (bad record {o.max_errors + 1}: more than --max-errors {o.max_errors}; "
            f"all of them in {ERRORS})",
            bad,
        )
    if row["fatal"]:
        raise Stop(row["fatal"], bad)


def _marker_of(row: dict) -> dict:
    """What the driver keeps of a shard: its marker's content, from the row that the actor returned with it."""
    keep = ("size", "sha256", "format", "documents", "sentences", "mentions", "node", "output")
    return {
        "shard": row["index"],
        "input": row["path"],
        **{k: row[k] for k in keep},
        "errors": len(json.loads(row["bad"])),
        "bad_records": json.loads(row["bad"]),
        "finished_at": time.time(),
    }
