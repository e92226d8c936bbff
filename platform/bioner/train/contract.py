"""What the driver hands every Ray Train worker: one typed object, nothing read from globals."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig
from ..data.specs import Spec


@dataclass(frozen=True)
class WorkerJob:
    """One training job as a worker sees it.

    `cpus` is the Ray resource each worker holds (the cluster's cores shared out by the driver);
    the worker runs that many torch threads. Metrics go to `mlflow_run_id` in `tracking_uri` when
    both are set (a benchmark run logs nothing). `spec` is the dataset spec as the driver found it:
    a worker runs in a folder of its own, where a spec named from the driver's working folder is not
    found again (None: the worker finds `config.dataset` itself).
    """

    config: TrainConfig
    cpus: float
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    progress: bool = True
    spec: Spec | None = None

    @property
    def threads(self) -> int:
        return max(1, round(self.cpus))
