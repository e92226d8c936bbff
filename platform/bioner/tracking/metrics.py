"""Per-epoch metrics from Ray Train workers, logged once each, surviving an MLflow server restart."""

from __future__ import annotations

import hashlib
import re
import time

from .store import env_float

# How long (seconds) a worker keeps retrying one epoch's metrics while the MLflow server is
# away (restart, network cut). MLflow's HTTP client already retries each call for about 4
# minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, exponential backoff); this window is on top of it.
RETRY_ENV, RETRY_DEFAULT_S = "BIONER_TRACKING_RETRY_S", 600.0


MAX_METRIC_NAME = 250  # MLflow refuses longer metric names (after the whole training, when the scores are logged)
_METRIC_CHARS = re.compile(r"[^\w\-. /]")


def metric_key(name: str) -> str:
    """A name MLflow accepts as a metric key: characters outside its set become '_', and a name
    over 250 characters is cut, with a short hash of the whole so that two long names stay apart."""
    key = _METRIC_CHARS.sub("_", name)
    if len(key) > MAX_METRIC_NAME:
        key = key[: MAX_METRIC_NAME - 9] + "_" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return key


def metric_keys(metrics: dict) -> dict:
    return {metric_key(k): v for k, v in metrics.items()}


def transient(e: BaseException) -> bool:
    """Whether a tracking call may succeed if tried again: the server or the network failed, not the
    request. MLflow wraps a refused connection in an MlflowException whose code maps to HTTP 500."""
    import requests  # lazy (platform/README.md)
    from mlflow.exceptions import MlflowException

    if isinstance(e, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout)):
        return True
    return isinstance(e, MlflowException) and e.get_http_status_code() >= 500


def retry(fn, window_s: float | None = None):
    """Retry a tracking call with backoff for `window_s` (default $BIONER_TRACKING_RETRY_S) while it
    fails for a transient reason, so a restarting server loses no metric; any other error at once."""
    window_s = env_float(RETRY_ENV, RETRY_DEFAULT_S) if window_s is None else window_s
    deadline = time.monotonic() + window_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as e:
            if not transient(e) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 5.0)  # one cheap request every 5 s: metrics flow again soon after the server is back


PRECISION = "bioner.precision"  # run tag: "bf16 autocast" or "fp32", what the training step ran


def log_epoch_metrics(tracking_uri: str, run_id: str, metrics: dict, step: int, tags: dict | None = None) -> None:
    from mlflow import MlflowClient  # lazy (platform/README.md)
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(tracking_uri)
    ts = int(time.time() * 1000)
    batch = [Metric(metric_key(k), float(v), ts, step) for k, v in metrics.items() if k != "epoch"]

    def log() -> None:
        # After a worker restart or `train --resume`, the epoch after the last checkpoint is
        # trained again from that checkpoint's weights, optimizer and RNG state. If its
        # metrics reached MLflow before the failure, they stand: each epoch is logged once.
        if batch and any(m.step == step for m in client.get_metric_history(run_id, batch[0].key)):
            return
        client.log_batch(run_id, metrics=batch, tags=[RunTag(k, v) for k, v in (tags or {}).items()])

    retry(log)
