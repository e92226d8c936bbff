"""MLflow: one run per training job, its params, per-epoch metrics, predictions and model."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from .errors import BionerError

MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run_id>/model


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
    return out


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
def training_run(cfg, data, parent_run_id: str | None = None, extra_tags: dict | None = None):
    """Open the job's MLflow run; on any error it ends FAILED (KILLED on Ctrl-C), never FINISHED."""
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
    run = mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags)
    status = "FAILED"
    try:
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


def _retry(fn, attempts: int = 6, delay: float = 1.0):
    """Retry a tracking call with backoff, so a restarting server loses no metric."""
    for i in range(attempts):
        try:
            return fn()
        except Exception:
            if i == attempts - 1:
                raise
            time.sleep(delay * 2**i)


def log_epoch_metrics(tracking_uri: str, run_id: str, metrics: dict, step: int) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if k != "epoch"]
    _retry(lambda: client.log_batch(run_id, metrics=batch))


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
