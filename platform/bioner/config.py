"""Typed configuration: one pydantic model per command, loaded from YAML plus `--set` overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, format_validation_error

QuerySource = Literal["none", "wikipedia", "annotation", "dictionary", "random"]
QUERY_SOURCES: tuple[str, ...] = get_args(QuerySource)
SplitName = Literal["train", "devel", "test"]
SPLITS: tuple[str, ...] = get_args(SplitName)
ALL_TYPES = "all"  # mrc_types_per_sentence: every type a sentence's corpus annotates (stored as None)


# $MLFLOW_TRACKING_URI as the process started. Read once, at import: mlflow.set_tracking_uri()
# rewrites the variable, so reading it per job would send a second job in the same process (a
# notebook, the test suite) to the first job's store.
ENV_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or None


class TrainConfig(BaseModel):
    """Everything one training job needs. Every field is logged as an MLflow param."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = Field("ncbi-disease", description="dataset name (experiments/datasets/<name>.yaml) or a spec path")
    encoder: str = Field("minilm", description="'minilm' (packaged, offline), 'biobert', a local folder or a hub name")
    query_source: QuerySource = Field(
        "annotation", description="MRC query source: none, wikipedia, annotation, dictionary, random"
    )
    alpha: float = Field(1.0, ge=0, le=1, description="weight of the NER (BIO cross-entropy) loss")
    beta: float = Field(1.0, ge=0, le=1, description="weight of the MRC (start/end BCE) loss; 0 = single-task baseline")
    learning_rate: float = Field(3e-5, gt=0, le=1, description="peak AdamW learning rate")
    epochs: int = Field(3, ge=1, description="passes over the training sentences")
    batch_size: int = Field(32, ge=1, description="sentences per step (global, split over workers)")
    max_length: int = Field(256, ge=16, le=8192, description="longest encoder input; longer sentences are windowed")
    train_fraction: float = Field(
        1.0, gt=0, le=1, description="seeded fraction of training sentences kept (low-resource runs)"
    )
    seed: int = Field(42, description="seed for initialisation, sampling and shuffling")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP: gloo on CPU, NCCL on GPU)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float | None = Field(
        None,
        ge=0.1,
        description="CPU cores per worker (Ray resource, may be fractional); "
        "default: the cluster's cores / num_workers",
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db"
    )
    experiment: str = Field("bioner", min_length=1, description="MLflow experiment name")
    output_dir: str = Field("outputs", description="folder for the MLflow store, checkpoints, models and predictions")
    train_splits: list[SplitName] = Field(
        ["train", "devel"], min_length=1, description="splits merged for training (paper: train+devel)"
    )
    eval_split: SplitName = Field("test", description="split scored at the end (paper: test)")
    eval_every_epoch: bool = Field(False, description="also score eval_split after every epoch (for tuning on devel)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps with linear learning-rate warm-up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after the encoder")
    dictionary_examples: int = Field(3, ge=1, description="entity strings in a dictionary query")
    group_by_length: bool = Field(
        False,
        description="batch sentences of similar length (less padding, faster); "
        "off: plain random batches as the HF recipe",
    )
    micro_batching: bool = Field(
        True,
        description="run each optimizer step's sentences as length-sorted micro-batches (loss normalised by the "
        "whole batch, gradients accumulated: the same step, far less padding); false: one forward per task padded "
        "to its longest row, as the HF recipe",
    )
    micro_batch_tokens: int | None = Field(
        None,
        ge=16,
        description="padded positions per training micro-batch; default: 4096 on a CPU, where small products stay "
        "in cache; on a GPU, where larger is faster, what half its free memory holds, 16384 to 131072",
    )
    packing: bool | None = Field(
        None,
        description="lay each micro-batch's rows end to end in rows as long as the longest input, each attending "
        "only to itself (block-diagonal mask through the encoder's SDPA attention) with its own positions: almost no "
        "padding and one width per step, the same loss and gradient; default: on where the step runs bf16 (a GPU, a "
        "CPU with AMX), off elsewhere, where length-sorted micro-batches already pad little",
    )
    mrc_types_per_sentence: int | None = Field(
        None,
        ge=1,
        description="MRC: entity types asked per sentence and epoch, drawn (seeded) from those its corpus annotates, "
        "the loss weighted so its expectation is the full loss; 'all' (the default, the paper): every type. "
        "1 keeps the MRC cost of a one-type corpus",
    )
    mrc_eval_rows: int = Field(
        6000,
        ge=0,
        description="scoring the MRC head (mrc_<split>_f1) asks every annotated type about each sentence: at most this "
        "many (sentence, type) rows, from a seeded sample of sentences; 0: not scored",
    )
    init_from: str | None = Field(
        None,
        description="a saved model folder to start from (bioner extend): its weights and head rows are kept, types it "
        "lacks get new rows",
    )
    eval_batch_size: int = Field(64, ge=1, description="sentences per inference batch")
    max_failures: int = Field(
        0, ge=0, description="Ray Train restarts from the last checkpoint after a worker failure, this many times"
    )
    trust_remote_code: bool = Field(False, description="allow model code from the hub (off: it runs arbitrary code)")
    torch_compile: bool = Field(
        False, description="compile the model with torch.compile (dynamic shapes); pays a compile time once per worker"
    )
    bf16: bool = Field(
        True,
        description="bf16 autocast in training where the chip multiplies bf16 natively: a GPU that supports it, or "
        "a CPU with AMX when it packs its micro-batches (`packing`: its bf16 kernels are built per shape, and packed "
        "micro-batches have few shapes) and the encoder is at least 256 wide (narrower products do not repay the "
        "casts); other CPUs train in fp32. Weights, optimizer and inference stay fp32; the run's tag bioner.precision "
        "says which ran; false: fp32 everywhere",
    )
    run_name: str | None = Field(None, description="MLflow run name (default: dataset-source-seed)")

    @field_validator("experiment", "run_name")
    @classmethod
    def _path_safe(cls, v: str | None) -> str | None:
        # The experiment names folders under output_dir (tune/<experiment>, train/<experiment>):
        # it must not climb out of it. run_name follows the same rule, so no later use of it as
        # a folder name can either.
        if v is not None and (any(c in v for c in "/\\") or v.strip(".") == "" or any(ord(c) < 32 for c in v)):
            raise ValueError(
                f"{v!r}: no '/', '\\', control characters, and not '.' or '..' (it names a folder under output_dir)"
            )
        return v

    @field_validator("mrc_types_per_sentence", mode="before")
    @classmethod
    def _types_per_sentence(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML's true/false: pydantic would read true as 1
            raise ValueError(f"{str(v).lower()} is not a number of types: give a whole number >= 1, or all")
        if isinstance(v, str) and v.strip().lower() == ALL_TYPES:
            return None  # every type, the default
        if isinstance(v, str) and not v.strip().isdigit():
            raise ValueError(f"{v!r}: give a whole number >= 1, or all")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta are both 0: nothing to train (set alpha > 0 or beta > 0)")
        if self.eval_split in self.train_splits and self.eval_split != "train":
            raise ValueError(f"eval_split {self.eval_split!r} is also a training split")
        return self

    @property
    def multitask(self) -> bool:
        return self.beta > 0

    def train_config(self, **updates: Any) -> TrainConfig:
        """The plain TrainConfig of one run: this config's training keys (a tune, sweep or bench
        config has more keys) with `updates` applied, validated like a file."""
        values = {k: getattr(self, k) for k in TrainConfig.model_fields}
        try:
            return TrainConfig(**{**values, **updates})
        except ValidationError as e:
            raise ConfigError(format_validation_error(e)) from None

    def resolved_tracking_uri(self) -> str:
        """tracking_uri, else $MLFLOW_TRACKING_URI as this process found it (MLflow's convention), else
        the embedded store in output_dir."""
        return (
            absolute_sqlite_uri(self.tracking_uri or ENV_TRACKING_URI)
            or f"sqlite:///{Path(self.output_dir).resolve() / 'mlflow.db'}"
        )


def absolute_sqlite_uri(uri: str | None) -> str | None:
    """A `sqlite:///relative/path` URI made absolute against this process's working directory, as
    MLflow reads it here: Ray Tune trials, Train workers and Serve replicas run in other folders, where
    the same relative URI names a new, empty store ("No Experiment with id=1 exists")."""
    db = sqlite_file(uri) if uri else None
    if db is None or db.is_absolute():
        return uri
    return f"sqlite:///{db.resolve()}" + "".join(uri.partition("?")[1:])


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (None for a server or another backend)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0]).expanduser()


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs, value parsed as YAML; dotted keys reach into nested mappings."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML") from None
        node = out
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # `--set epochs=1 --set epochs.x=2`
                where = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"--set {key}: {where} is already set to {node!r} by an earlier --set, not a mapping with keys"
                )
        node[parts[-1]] = value
    return out


def deep_update(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a config is a mapping of key: value")
    return raw


def here() -> Path:
    """The current directory, by the path it was entered by when it has been deleted under the
    process: a Ray job's folder, which Ray may unpack again at the same path while the job runs
    (train.local_ray says when)."""
    try:
        return Path(os.getcwd())
    except FileNotFoundError:
        pwd = os.environ.get("PWD")
        if pwd and os.path.isabs(pwd):
            return Path(pwd)
        raise


def resolve_spec_path(dataset: Any, config_path: str | os.PathLike | None) -> Any:
    """A dataset spec path made absolute: relative to the current directory when it is there, else
    relative to the config file, like every path in a config. Ray Train runs each worker in a folder
    of its own, where a relative path finds nothing."""
    if isinstance(dataset, str) and dataset.endswith((".yaml", ".yml")):
        ds = Path(dataset).expanduser()
        if not ds.is_absolute():
            if (here() / ds).exists() or not config_path:
                return str(here() / ds)
            return str((Path(config_path).parent / ds).resolve())
    return dataset


def resolve_folder_path(folder: Any, config_path: str | os.PathLike | None) -> Any:
    """A relative encoder or model folder made absolute (from the current directory, else the config's),
    for the same reason; a name that is no folder here (minilm, a hub name) stays as it is."""
    if not isinstance(folder, str) or folder in ("minilm", "biobert") or Path(folder).expanduser().is_absolute():
        return folder
    for base in (here(), Path(config_path).parent if config_path else None):
        if base is not None and (base / folder).is_dir():
            return str((base / folder).resolve())
    return folder


def _set_without_effect(cfg: BaseModel) -> str | None:
    """A key the user set that the rest of the config makes do nothing. Only a plain training config:
    a study's beta is set per trial or cell, where a config-wide rule would be wrong."""
    if (
        type(cfg) is TrainConfig
        and cfg.beta == 0
        and cfg.mrc_types_per_sentence is not None
        and "mrc_types_per_sentence" in cfg.model_fields_set
    ):
        return (
            "mrc_types_per_sentence has no effect with beta=0 (the single task asks no MRC queries): drop it, or set "
            "beta > 0"
        )
    return None


def load_config(
    model: type[BaseModel],
    path: str | os.PathLike | None,
    overrides: list[str] | None = None,
    ignore: set[str] = frozenset(),
):
    """YAML + `--set` overrides validated as `model`; keys in `ignore` (another command's) are dropped."""
    raw = read_yaml(path) if path else {}
    raw = deep_update(raw, parse_overrides(overrides))
    if "dataset" in raw:
        raw["dataset"] = resolve_spec_path(raw["dataset"], path)
    for key in ("encoder", "init_from"):  # folders (init_from: the model `bioner extend` starts from)
        if key in raw:
            raw[key] = resolve_folder_path(raw[key], path)
    for k in ignore:
        raw.pop(k, None)
    src = f"{path}: " if path else ""
    try:
        cfg = model(**raw)
    except ValidationError as e:
        raise ConfigError(f"{src}{format_validation_error(e)}") from None
    if no_effect := _set_without_effect(cfg):
        raise ConfigError(f"{src}{no_effect}")
    out = getattr(cfg, "output_dir", None)
    if isinstance(out, str) and not Path(out).expanduser().is_absolute():
        # fixed now: a job's later steps (a study's refits, a Ray job that leaves its folder) see one folder
        cfg = cfg.model_copy(update={"output_dir": str(here() / Path(out).expanduser())})
    return cfg
