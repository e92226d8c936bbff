"""Pre-flight checks of a training job: what can be known before any MLflow run opens or Ray starts.

The encoder is resolved and its config and tokenizer loaded here, in the driver (a missing folder
or an unreachable hub is one line at once, not a worker's traceback a minute later); max_length
is held between what the queries need and what the encoder's positions allow; and once Ray is up,
the cluster must have the GPUs the job asks for (Ray would wait for them forever).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import TrainConfig
from ..data.features import FeatureBuilder
from ..data.queries import Queries
from ..data.specs import DatasetSpec
from ..errors import ConfigError
from ..model import check_encoder, position_limit
from .local_ray import ensure_ray

# FeatureBuilder refuses a window with fewer pieces than this for the sentence itself.
MIN_SENTENCE_PIECES = 8
_UNBOUNDED = 1_000_000


def min_max_length(tokenizer, spec: DatasetSpec, queries: Queries | None) -> int:
    """The shortest max_length that leaves a sentence room next to the longest query and the
    special tokens ([CLS] q [SEP] s [SEP])."""
    fb = FeatureBuilder(tokenizer, spec.labels, _UNBOUNDED, queries, spec.types if queries else ())
    return _UNBOUNDED - fb.budget + MIN_SENTENCE_PIECES


def check_job(cfg: TrainConfig, spec: DatasetSpec, queries: Sequence[Queries | None]) -> None:
    """Encoder, tokenizer and max_length, before anything starts. `queries`: every query set the
    job can ask (one for a training job; one per searched query source for a search)."""
    config, tok = check_encoder(cfg.encoder, cfg.trust_remote_code)
    limit = position_limit(config, tok)
    low = max(min_max_length(tok, spec, q) for q in queries) if queries else min_max_length(tok, spec, None)
    with_queries = any(q is not None for q in queries)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(
            f"max_length {cfg.max_length}: the encoder {cfg.encoder!r} takes at most {limit} positions "
            f"(set max_length between {low} and {limit}; longer sentences are windowed)"
        )
    if cfg.max_length < low:
        what = "the longest query, the special tokens" if with_queries else "the special tokens"
        raise ConfigError(
            f"max_length {cfg.max_length}: too short for {what} and {MIN_SENTENCE_PIECES} pieces of sentence; "
            f"the minimum here is {low}"
        )


def check_resources(cfg: TrainConfig) -> None:
    """The Ray cluster has the GPUs the job asks for (Ray waits for missing resources forever)."""
    import ray  # lazy (platform/README.md)

    if cfg.use_gpu:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < cfg.num_workers:
            raise ConfigError(
                f"use_gpu: {cfg.num_workers} worker(s) need {cfg.num_workers} GPU(s), the Ray cluster has "
                f"{gpus:g}; set use_gpu=false, or fewer workers"
            )


def start_ray(cfg: TrainConfig) -> None:
    """Join or start Ray, then check that it can run the job."""
    ensure_ray()
    check_resources(cfg)
