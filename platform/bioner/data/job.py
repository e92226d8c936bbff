"""What a training job reads: the spec, its merged training split, the eval split, the queries.

Computed the same way on the driver (to validate before anything starts) and on each worker
(which reads the files itself, so nothing large travels through the Ray object store).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig
from .iob import Split, merge, read_split, subsample
from .queries import Queries
from .specs import Spec, load_spec


@dataclass
class JobData:
    spec: Spec
    train: Split
    eval: Split
    queries: Queries | None  # None for the single-task baseline (beta = 0)


def load_job_data(cfg: TrainConfig, spec: Spec | None = None) -> JobData:
    """`spec`: the dataset spec already found (a worker is handed the driver's); else `cfg.dataset` is found here."""
    spec = spec if spec is not None else load_spec(cfg.dataset)
    train = merge([read_split(spec, s) for s in cfg.train_splits])
    train = subsample(train, cfg.train_fraction, cfg.seed)
    ev = read_split(spec, cfg.eval_split)
    # Dictionary queries sample entity strings from the training sentences only.
    queries = Queries.build(spec, cfg.query_source, train, cfg.seed, cfg.dictionary_examples) if cfg.multitask else None
    return JobData(spec, train, ev, queries)
