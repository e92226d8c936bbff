"""Ray Serve start-up and shut-down for `bioner serve`: the model checked before anything starts, the
deployment's options, the HTTP proxy, and a clean stop on Ctrl-C or SIGTERM (`bioner jobs stop`)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import time

from ..config import absolute_sqlite_uri
from ..errors import BionerError, SystemFailure, first_line
from ..model import load_model
from ..tracking.models import resolve_model
from ..train.local_ray import ensure_ray
from .config import ServeConfig
from .follow import parse_model_uri
from .ingress import configure_local
from .server import BioNERServer

DEPLOYMENT = "BioNERServer"


def check_model(cfg: ServeConfig) -> str:
    """Refuse a model that cannot be served before Ray starts; say what will be served."""
    ref = parse_model_uri(cfg.model)
    if ref.name is None:
        if "://" in ref.uri or ref.uri.startswith("runs:/"):
            return ref.uri  # a run's model: the replicas download it, and fail to start if it is not there
        folder = resolve_model(ref.uri)  # a folder: one line if it is not a model
        # What `bioner predict` checks (files, weights, tokenizer, lengths), so that a broken folder is one line here
        # rather than replicas that fail to start; the copy loaded for it is dropped at once.
        load_model(folder)
        return str(folder)
    from mlflow import MlflowClient  # lazy (platform/README.md)
    from mlflow.exceptions import MlflowException

    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    try:
        mv = (
            client.get_model_version_by_alias(ref.name, ref.alias)
            if ref.follows
            else client.get_model_version(ref.name, ref.version)
        )
    except MlflowException as e:
        raise BionerError(
            f"--model {cfg.model}: not found in the registry at {cfg.tracking_uri} ({first_line(e)})"
        ) from None
    follows = f", following @{ref.alias} (read every {cfg.poll_s:g} s" + (
        " and once per batch)" if cfg.check_alias else ")"
    )
    return f"{ref.name} version {mv.version}" + (follows if ref.follows else "")


def check_port(host: str, port: int) -> None:
    """On a local Ray the proxy binds here: say so now if it cannot, rather than have Serve retry forever."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise BionerError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


def replica_cpus(cfg: ServeConfig) -> float:
    """--cpus-per-replica, else the cluster's CPUs shared by the replicas (whole CPUs when there are enough,
    at most one node's worth, so every replica can be placed)."""
    if cfg.cpus_per_replica:
        return cfg.cpus_per_replica
    import ray  # lazy (platform/README.md)

    total = float(ray.cluster_resources().get("CPU", 1))
    largest = max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=total)
    per = min(total / cfg.replicas, largest)
    return float(math.floor(per)) if per >= 1 else max(0.01, math.floor(per * 100) / 100)


def application(cfg: ServeConfig):
    """The bound Serve application: `cfg.replicas` replicas of BioNERServer behind a FastAPI ingress."""
    from ray import serve  # lazy (platform/README.md)

    deployment = serve.deployment(
        name=DEPLOYMENT,
        num_replicas=cfg.replicas,
        ray_actor_options={"num_cpus": cfg.cpus_per_replica},
        # enough requests at a replica to fill the next batch while one is tagged
        max_ongoing_requests=max(8, 2 * cfg.max_batch_texts),
        max_queued_requests=cfg.max_queued,
        health_check_period_s=2.0,
        health_check_timeout_s=30.0,
        graceful_shutdown_wait_loop_s=1.0,
        graceful_shutdown_timeout_s=30.0,
        max_constructor_retry_count=3,
        logging_config={"enable_access_log": False},
    )(serve.ingress()(BioNERServer))
    return deployment.bind(cfg)


def start(cfg: ServeConfig) -> ServeConfig:
    """Start Serve's HTTP proxy and the application on the Ray this process is connected to; returns the
    configuration the replicas got (CPUs and store resolved)."""
    from ray import serve  # lazy (platform/README.md)

    cfg = cfg.model_copy(
        update={"cpus_per_replica": replica_cpus(cfg), "tracking_uri": absolute_sqlite_uri(cfg.tracking_uri)}
    )
    # Serve's proxy options are per cluster: where Serve runs already, its host and port stay as they are.
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config={"enable_access_log": False})
    try:
        serve.run(application(cfg), name=cfg.app_name, route_prefix="/")
    except RuntimeError as e:  # the replicas failed to start (Serve retried them)
        raise SystemFailure(f"bioner serve: the application did not start ({first_line(e)})") from None
    return cfg


def stop(cfg: ServeConfig, whole: bool) -> None:
    """Delete the application (a cluster keeps Serve for others), or shut Serve down (a local Ray)."""
    from ray import serve  # lazy (platform/README.md)

    if whole:
        serve.shutdown()
    else:
        serve.delete(cfg.app_name)


@contextlib.contextmanager
def interrupted_by_sigterm():
    """SIGTERM (`bioner jobs stop`, a service manager) ends the command as Ctrl-C does."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def serve_until_stopped(cfg: ServeConfig, say) -> None:
    """`bioner serve`: check, start, answer until Ctrl-C or SIGTERM, then shut down cleanly."""
    on_cluster = bool(os.environ.get("RAY_ADDRESS"))
    what = check_model(cfg)
    mode = "the cluster's"

    def shut_down() -> None:
        with contextlib.suppress(Exception):  # Ray may be gone already (its own Ctrl-C handling)
            stop(cfg, whole=not on_cluster)
        say("stopped")

    with contextlib.ExitStack() as cleanup:  # undone in reverse, also when Ray or the application fails to start
        if not on_cluster:
            check_port(cfg.host, cfg.port)
            mode, haproxy_files = configure_local(cfg.ingress, cfg.host)  # read by the processes the local Ray starts
            if haproxy_files is not None:
                cleanup.callback(shutil.rmtree, haproxy_files, ignore_errors=True)
        ensure_ray()
        cleanup.enter_context(
            interrupted_by_sigterm()
        )  # after Ray's start-up, which installs a SIGTERM handler of its own
        cleanup.callback(shut_down)
        try:
            say(f"starting {cfg.replicas} replica(s) of {what} ...")
            started = start(cfg)
            base = f"http://{cfg.host}:{cfg.port}"
            say(
                f"serving on {base}/predict ({started.cpus_per_replica:g} CPU(s) per replica, {mode} ingress); "
                f"docs {base}/docs, model {base}/model. Ctrl-C stops."
            )
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            say("stopping ...")
