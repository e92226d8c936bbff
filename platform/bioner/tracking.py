"""MLflow: one run per training job, its params, per-epoch metrics, predictions and model."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from .errors import BionerError

MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run_id>/model
# How long (seconds) a worker keeps retrying one epoch's metrics while the MLflow server is
# away (restart, network cut). MLflow's HTTP client already retries each call for about 4
# minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, exponential backoff); this window is on top of it.
RETRY_ENV, RETRY_DEFAULT_S = "BIONER_TRACKING_RETRY_S", 600.0
# Free space (MiB) the output folder needs before a job starts: checkpoints, the model copy and
# its logged artifact of a MiniLM run take about 400 MiB, a BioBERT run about 1.7 GiB.
MIN_FREE_ENV, MIN_FREE_DEFAULT_MB = "BIONER_MIN_FREE_MB", 512


def prepare_output_dir(path: str) -> Path:
    """Create the output folder and prove it is writable, before any training starts."""
    out = Path(path).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as e:
        raise BionerError(f"output_dir {out}: not writable ({e.strerror})") from None
    free_mb = shutil.disk_usage(out).free / 2**20
    need_mb = _env_float(MIN_FREE_ENV, MIN_FREE_DEFAULT_MB)
    if free_mb < need_mb:
        raise BionerError(
            f"output_dir {out}: {free_mb:.0f} MiB free, a job needs at least {need_mb:.0f} MiB "
            f"(free some space, or set {MIN_FREE_ENV} to a lower floor)"
        )
    return out


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BionerError(f"${name}={raw!r}: expected a number") from None


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Refuse at once when an MLflow server does not answer (MLflow's own retries take minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as e:
        raise BionerError(f"tracking_uri {tracking_uri}: MLflow server not reachable ({type(e).__name__}); start it or fix the URI") from None


def use_experiment(tracking_uri: str, experiment: str, output_dir: Path) -> str:
    """Point MLflow at the store and return the experiment id, creating it if needed.

    With the default SQLite store, artifacts go to <output_dir>/mlartifacts beside the database.
    """
    import mlflow

    check_reachable(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        exp = mlflow.get_experiment_by_name(experiment)
    except Exception as e:  # an unreachable server raises MlflowException or a requests error
        raise BionerError(f"tracking_uri {tracking_uri}: MLflow is not reachable ({str(e).splitlines()[0][:200]})") from None
    if exp is not None:
        return exp.experiment_id
    loc = (output_dir / "mlartifacts").as_uri() if tracking_uri.startswith("sqlite:") else None
    return mlflow.create_experiment(experiment, artifact_location=loc)


def flat_params(cfg) -> dict[str, str]:
    out = {}
    for k, v in cfg.model_dump().items():
        out[k] = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return out


@contextlib.contextmanager
def training_run(cfg, data, parent_run_id: str | None = None, extra_tags: dict | None = None, resume_run_id: str | None = None):
    """Open the job's MLflow run (or reopen `resume_run_id`); on any error it ends FAILED (KILLED
    on Ctrl-C), never FINISHED."""
    import mlflow

    out_dir = Path(cfg.output_dir).resolve()
    exp_id = use_experiment(cfg.resolved_tracking_uri(), cfg.experiment, out_dir)
    name = cfg.run_name or f"{data.spec.name}-{cfg.query_source if cfg.multitask else 'single'}-s{cfg.seed}"
    tags = {
        "dataset": data.spec.name,
        "encoder": cfg.encoder,
        "task": "multi-task" if cfg.multitask else "single-task",
        "git_commit": git_commit(),
        **(extra_tags or {}),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if resume_run_id:
        run = mlflow.start_run(run_id=resume_run_id)
    else:
        run = mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags)
    status = "FAILED"
    try:
        if not resume_run_id:  # a reopened run has its params and queries already
            mlflow.log_params(flat_params(cfg))
            mlflow.log_params({"train_sentences": len(data.train), f"{data.eval.name}_sentences": len(data.eval)})
            if data.queries:
                mlflow.log_dict(data.queries.to_dict(), "queries.json")
        yield run.info.run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status=status)


@contextlib.contextmanager
def ends_on_error(client, run_id: str, passthrough: tuple[type[BaseException], ...] = ()):
    """A parent run (tune, sweep) left by an error ends FAILED, by Ctrl-C KILLED; the exceptions
    in `passthrough` have ended the run themselves and go through untouched."""
    try:
        yield
    except passthrough:
        raise
    except KeyboardInterrupt:
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise


def _retry(fn, window_s: float | None = None):
    """Retry a tracking call with backoff for `window_s` (default $BIONER_TRACKING_RETRY_S), so a
    restarting server loses no metric."""
    window_s = _env_float(RETRY_ENV, RETRY_DEFAULT_S) if window_s is None else window_s
    deadline = time.monotonic() + window_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 5.0)  # one cheap request every 5 s: metrics flow again soon after the server is back


def log_epoch_metrics(tracking_uri: str, run_id: str, metrics: dict, step: int) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if k != "epoch"]

    def log() -> None:
        # After a worker restart or `train --resume`, the epoch after the last checkpoint is
        # trained again from that checkpoint's weights, optimizer and RNG state. If its
        # metrics reached MLflow before the failure, they stand: each epoch is logged once.
        if batch and any(m.step == step for m in client.get_metric_history(run_id, batch[0].key)):
            return
        client.log_batch(run_id, metrics=batch)

    _retry(log)


def log_final(metrics: dict, predictions: Path, model_dir: Path) -> str:
    """Log scores, predictions and the model to the active run; return the model's URI."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.log_artifact(str(predictions), "predictions")
    return log_model(model_dir).model_uri


def log_model(model_dir: Path):
    """Log the folder as an MLflow pyfunc mapping raw text to entities (character offsets)."""
    import mlflow

    from .pyfunc import MODEL_CODE, pip_requirements

    return mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=str(MODEL_CODE),
        artifacts={"model": str(model_dir)},
        pip_requirements=pip_requirements(),
    )
