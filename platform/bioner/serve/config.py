"""The options of `bioner serve`, checked once, travelling to every replica."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError, format_validation_error

# An answer of `bioner serve` names the model version that produced it in these headers.
VERSION_HEADER = "X-Model-Version"
NAME_HEADER = "X-Model-Name"


class ServeConfig(BaseModel):
    """Everything a replica needs; the CLI's options map one to one onto these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        ..., description="model folder or MLflow URI; models:/NAME@ALIAS is followed when the alias moves"
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking (and registry) URI the replicas read")
    app_name: str = Field("bioner", min_length=1, description="Ray Serve application name")
    replicas: int = Field(1, ge=1, le=256, description="replicas of the model (each a Ray actor with its own copy)")
    cpus_per_replica: float | None = Field(
        None,
        gt=0,
        description="Ray CPUs per replica (also its torch threads); default: the cluster's CPUs shared by the replicas",
    )
    host: str = Field("127.0.0.1", min_length=1, description="address the HTTP proxy binds")
    port: int = Field(8000, ge=1, le=65535, description="port of the HTTP proxy")
    poll_s: float = Field(
        10.0, gt=0, le=86400, description="seconds between two reads of the followed alias in the background"
    )
    check_alias: bool = Field(
        True,
        description="read the followed alias once per batch: no answer comes from a version older than the alias "
        "named when the request arrived",
    )
    max_texts: int = Field(64, ge=1, le=100_000, description="texts per request (more: HTTP 413)")
    max_chars: int = Field(10_000, ge=1, le=10_000_000, description="characters per text (more: HTTP 413)")
    max_batch_texts: int = Field(
        64, ge=1, le=100_000, description="texts of all the requests tagged together in one batch"
    )
    batch_wait_s: float = Field(
        0.0,
        ge=0,
        le=10,
        description="seconds a batch waits for more requests once its first one arrived (0: it takes the requests "
        "waiting; those that arrive while it is tagged form the next)",
    )
    max_queued: int = Field(1000, ge=1, description="requests waiting at the proxy for a replica (more: HTTP 503)")
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description="NER forward: int8 (CPU), fp32, or auto (int8 on a CPU)"
    )
    ingress: Literal["auto", "haproxy", "proxy"] = Field(
        "auto",
        description="front door of a local Ray's Serve: HAProxy to replicas that answer HTTP themselves, Serve's "
        "Python proxy, or auto (HAProxy where installed)",
    )

    @model_validator(mode="after")
    def _batch_holds_a_request(self):
        if self.max_batch_texts < self.max_texts:
            raise ValueError(
                f"--max-batch {self.max_batch_texts} < --max-texts {self.max_texts}: a request must fit in one batch"
            )
        return self

    @property
    def max_body_bytes(self) -> int:
        """The largest request body that can hold max_texts texts of max_chars characters: a character
        is at most 6 bytes of JSON (\\uXXXX), plus quotes, commas and the envelope."""
        return self.max_texts * (6 * self.max_chars + 8) + 1024

    @property
    def max_documents_body_bytes(self) -> int:
        """The same bound for POST /documents: a BioC document carries its text once more in the
        annotations it may already have, and its ids, offsets and infons (4 KiB of envelope each)."""
        return self.max_texts * (2 * 6 * self.max_chars + 4096) + 1024


def serve_config(**values) -> ServeConfig:
    """A ServeConfig, or one line naming the bad option."""
    try:
        return ServeConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        if not first["loc"]:  # a rule across options: its message names them
            raise ConfigError(f"bioner serve: {first['msg'].removeprefix('Value error, ')}") from None
        raise ConfigError(f"bioner serve: {format_validation_error(e)}") from None
