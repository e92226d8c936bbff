"""The job's MLflow run: opened (or the one a stopped session left, running again), metrics as shards
finish, the totals and the manifest at the end."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ...config import sqlite_file
from ...tracking.store import git_commit, use_experiment
from ..mlruns import log_params
from ..tags import GIT_COMMIT, KIND, STOP_REASON
from .modelref import ModelInfo
from .output import ERRORS, MANIFEST, OutputDir

KIND_ANNOTATE = "annotate"
RESUMED_FROM = "annotate.resumed_from"


def open_run(o, info: ModelInfo, manifest: dict | None, shards) -> str:
    """The job's MLflow run: the one the manifest names, running again, or a new one."""
    import mlflow  # lazy (platform/README.md)

    artifacts = sqlite_file(o.tracking_uri)
    exp_id = use_experiment(o.tracking_uri, o.experiment, artifacts.resolve().parent if artifacts else Path.cwd())
    client = mlflow.MlflowClient(o.tracking_uri)
    earlier = (manifest or {}).get("run_id")
    if earlier:
        try:
            client.get_run(earlier)
            client.update_run(earlier, status="RUNNING")
            return earlier
        except Exception:  # not in this store (another tracking URI): a new run names it
            pass
    tags = {
        KIND: KIND_ANNOTATE,
        GIT_COMMIT: git_commit(),
        "annotate.output": OutputDir(o.output).display(),
        **{
            f"model.{k}": v
            for k, v in (
                ("uri", info.uri),
                ("resolved", info.resolved),
                ("name", info.name),
                ("version", info.version),
                ("run_id", info.run_id),
            )
            if v
        },
    }
    if earlier:
        tags[RESUMED_FROM] = earlier
    run_id = client.create_run(exp_id, run_name=f"annotate-{Path(o.output.rstrip('/')).name}", tags=tags).info.run_id
    formats = sorted({s.format for s in shards})
    log_params(
        client,
        run_id,
        {
            "model": info.uri,
            "model_resolved": info.resolved,
            "files": len(shards),
            "input_bytes": sum(s.size for s in shards),
            "inputs": " ".join(o.inputs)[:500],
            "format": ",".join(formats),
            "output_format": o.output_format,
            "types": ",".join(o.types) if o.types else "all",
            "output": OutputDir(o.output).display(),
            "max_errors": o.max_errors if o.max_errors is not None else "stop at the first",
        },
    )
    return run_id


def client_of(o):
    import mlflow  # lazy (platform/README.md)

    return mlflow.MlflowClient(o.tracking_uri)


def end_run(o, run_id: str, out: OutputDir, manifest: dict, status: str, reason: str | None) -> None:
    from mlflow.entities import Metric  # lazy (platform/README.md)

    client = client_of(o)
    now_ms = int(time.time() * 1000)
    keys = ("documents", "sentences", "mentions", "errors", "seconds", "documents_per_s")
    figures = {k: manifest.get(k) for k in keys}
    client.log_batch(
        run_id,
        metrics=[
            Metric(k, float(v), now_ms, manifest.get("shards_done", 0)) for k, v in figures.items() if v is not None
        ],
    )
    with tempfile.TemporaryDirectory(prefix="bioner-annotate-") as d:
        local = Path(d) / MANIFEST
        local.write_text(out.read_text(MANIFEST) or "{}", encoding="utf-8")
        client.log_artifact(run_id, str(local))
        errors = out.read_text(ERRORS)
        if errors:
            (Path(d) / ERRORS).write_text(errors, encoding="utf-8")
            client.log_artifact(run_id, str(Path(d) / ERRORS))
    if reason:
        client.set_tag(run_id, STOP_REASON, reason[:500])
    client.set_terminated(run_id, status)
