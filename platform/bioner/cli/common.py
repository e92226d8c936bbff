"""What the command modules share: the consoles, option help texts, config loading, score tables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from ..bench.config import BenchConfig
from ..config import TrainConfig, absolute_sqlite_uri, load_config
from ..data.specs import load_spec
from ..studies.sweep_config import FILE_KEYS, SweepConfig
from ..studies.tune_config import TuneConfig

out = Console()
err = Console(stderr=True)

SET_HELP = "Override a config key: key=value, value parsed as YAML (e.g. --set train_fraction=0.1). Repeatable."
TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)."
MODEL_HELP = "Model folder, or an MLflow model URI (runs:/ID/model, models:/NAME@ALIAS)."
PRECISION_HELP = (
    "Inference precision of the NER forward: int8 (ONNX Runtime, dynamic quantisation; CPU only), fp32, or auto "
    "(int8 on a CPU, fp32 on a GPU)."
)

# One YAML serves several commands: a tune, sweep or bench config is a training config plus keys of
# its own. A command ignores exactly the other commands' keys; a typo is still refused by name.
_COMMAND_CONFIGS = (TrainConfig, TuneConfig, SweepConfig, BenchConfig)


def other_commands_keys(model: type[BaseModel]) -> set[str]:
    """Keys of the other commands' configs that `model` does not have."""
    keys = set(FILE_KEYS).union(*(c.model_fields for c in _COMMAND_CONFIGS))
    return keys - set(model.model_fields)


def load_command_config(model: type[BaseModel], config: Path | None, overrides: list[str] | None):
    """CONFIG + `--set` as `model`, other commands' keys ignored."""
    return load_config(model, config, overrides, ignore=other_commands_keys(model))


def store_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the default store of `outputs/`."""
    uri = absolute_sqlite_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))  # the same store from any process
    return uri or f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}"


def dataset_name(dataset: str) -> str:
    return load_spec(dataset).name


def print_scores(metrics: dict) -> None:
    t = Table(title="scores")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.4f}")
    out.print(t)
