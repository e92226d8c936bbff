"""What a user asks of `bioner annotate`, checked, and what the job did."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import BionerError

OUTPUT_FORMATS = ("parquet", "same")


@dataclass
class AnnotateOptions:
    model: str
    inputs: list[str]
    output: str
    tracking_uri: str
    format: str | None = None
    output_format: str = "parquet"
    resume: bool = False
    overwrite: bool = False
    max_errors: int | None = None
    actors: int | None = None
    min_actors: int | None = None
    max_actors: int | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float = 0.0
    batch_size: int = 64
    types: list[str] | None = None
    address: str | None = None
    experiment: str = "annotate"
    progress: bool = True


@dataclass
class AnnotateResult:
    output: str
    run_id: str | None
    status: str
    shards: int
    shards_before: int  # done by earlier sessions of the job
    documents: int = 0
    sentences: int = 0
    mentions: int = 0
    errors: int = 0
    seconds: float = 0.0  # this session
    documents_now: int = 0  # tagged by this session
    nodes: dict = field(default_factory=dict)  # node id -> documents tagged there by this session

    @property
    def documents_per_s(self) -> float:
        return self.documents_now / self.seconds if self.seconds > 0 else 0.0


def check_options(o: AnnotateOptions) -> None:
    if o.output_format not in OUTPUT_FORMATS:
        raise BionerError(f"--output-format {o.output_format}: expected parquet or same")
    if o.actors is not None and (o.min_actors is not None or o.max_actors is not None):
        raise BionerError(
            "--actors N is a fixed pool; --min-actors/--max-actors bound an autoscaling one: give one or the other"
        )
    for name, v in (("--actors", o.actors), ("--min-actors", o.min_actors), ("--max-actors", o.max_actors)):
        if v is not None and v < 1:
            raise BionerError(f"{name} {v}: at least 1")
    if o.min_actors is not None and o.max_actors is not None and o.min_actors > o.max_actors:
        raise BionerError(f"--min-actors {o.min_actors} is more than --max-actors {o.max_actors}")
    if o.max_errors is not None and o.max_errors < 0:
        raise BionerError(f"--max-errors {o.max_errors}: at least 0")
    if o.cpus_per_actor is not None and o.cpus_per_actor <= 0:
        raise BionerError(f"--cpus-per-actor {o.cpus_per_actor}: more than 0")
    if o.gpus_per_actor < 0:
        raise BionerError(f"--gpus-per-actor {o.gpus_per_actor}: at least 0")
    if o.batch_size < 1:
        raise BionerError(f"--batch-size {o.batch_size}: at least 1")
    if o.resume and o.overwrite:
        raise BionerError("--resume continues the job in --output; --overwrite replaces it: give one or the other")
