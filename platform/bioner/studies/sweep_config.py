"""A sweep config: training keys for every cell plus the grid (datasets x variants x seeds [x
training fractions]) and the cpu/gpu profiles that supply its defaults."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ..config import TrainConfig, deep_update, parse_overrides, read_yaml, resolve_spec_path
from ..errors import ConfigError, format_validation_error

SET_BY_SWEEP = ("dataset", "seed", "train_fraction")  # a variant cannot fix what the grid varies
FILE_KEYS = ("profiles",)  # keys of a sweep file that are not SweepConfig fields (load_sweep reads them)


class SweepConfig(TrainConfig):
    """A training config (applied to every cell) plus the grid."""

    profile: Literal["cpu", "gpu"] = Field("cpu", description="which block of `profiles` supplies the defaults")
    seeds: int = Field(3, ge=1, description="seeds per cell: seed, seed+1, ...")
    datasets: list[str] | None = Field(
        None, min_length=1, description="dataset names or spec paths (default: [dataset])"
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"single": {"beta": 0.0}, "multi": {}},
        min_length=1,
        description="variant name -> training-key overrides (e.g. single: {beta: 0})",
    )
    train_fractions: list[float] | None = Field(
        None, min_length=1, description="low-resource study: fractions of the training sentences"
    )
    per_dataset: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="dataset name -> training-key overrides for its cells (e.g. epochs, the best query)",
    )
    baseline: str | None = Field(
        None, description="the single-task variant p-values are computed against (default: the one with beta 0)"
    )
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="cells at once (default: as many as the cluster's CPUs or GPUs hold)"
    )

    @model_validator(mode="after")
    def _check_grid(self):
        if self.train_fractions and any(not 0 < f <= 1 for f in self.train_fractions):
            raise ValueError(f"train_fractions: every fraction must be in (0, 1], got {self.train_fractions}")
        for name, over in self.variants.items():
            if not isinstance(over, dict):
                raise ValueError(f"variants.{name}: a variant is a mapping of training keys (use {{}} for none)")
            fixed = [k for k in SET_BY_SWEEP if k in over]
            if fixed:
                raise ValueError(f"variants.{name}.{fixed[0]}: set by the sweep's grid, not by a variant")
        if self.baseline is not None and self.baseline not in self.variants:
            raise ValueError(f"baseline: {self.baseline!r} is not a variant ({', '.join(self.variants)})")
        return self

    def dataset_list(self) -> list[str]:
        return list(self.datasets or [self.dataset])

    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]

    def fraction_list(self) -> list[float]:
        return list(self.train_fractions or [self.train_fraction])

    def baseline_variant(self) -> str | None:
        if self.baseline:
            return self.baseline
        return next((n for n, o in self.variants.items() if float(o.get("beta", self.beta)) == 0), None)


@dataclass(frozen=True)
class Cell:
    key: str
    dataset: str
    variant: str
    seed: int
    train_fraction: float
    config: TrainConfig


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """YAML + `--set`; the chosen profile's block supplies defaults under the file's top-level keys."""
    raw = deep_update(read_yaml(path), parse_overrides(overrides))
    profiles = raw.pop("profiles", None) or {}
    profile = raw.get("profile", "cpu")
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles: a mapping of profile name -> keys")
    if profiles and profile not in profiles:
        raise ConfigError(f"{path}: profile: {profile!r} is not in profiles ({', '.join(profiles)})")
    block = profiles.get(profile) or {}
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: profiles.{profile}: a mapping of keys")
    merged = deep_update(copy.deepcopy(block), raw)
    merged["datasets"] = [resolve_spec_path(d, path) for d in merged.get("datasets") or []] or None
    if "dataset" in merged:
        merged["dataset"] = resolve_spec_path(merged["dataset"], path)
    try:
        cfg = SweepConfig(**merged)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e)}") from None
    grid(cfg, where=str(path))  # every cell must be a valid training config before anything starts
    return cfg


def dataset_name(dataset: str) -> str:
    return Path(dataset).stem if dataset.endswith((".yaml", ".yml")) else dataset


def grid(cfg: SweepConfig, where: str = "sweep") -> list[Cell]:
    """Every cell's training config, seed-major: a sweep cut short still has whole seeds."""
    cells = []
    for seed in cfg.seed_list():
        for dataset in cfg.dataset_list():
            for frac in cfg.fraction_list():
                for name, over in cfg.variants.items():
                    key = f"{dataset_name(dataset)}:{name}:f{frac:g}:s{seed}"
                    values = {
                        **cfg.per_dataset.get(dataset_name(dataset), {}),
                        **over,
                        "dataset": dataset,
                        "seed": seed,
                        "train_fraction": frac,
                        "run_name": key,
                    }
                    try:
                        tc = cfg.train_config(**values)
                    except ConfigError as e:
                        raise ConfigError(
                            f"{where}: per_dataset.{dataset_name(dataset)} or variants.{name}: {e}"
                        ) from None
                    cells.append(Cell(key, dataset_name(dataset), name, seed, frac, tc))
    unknown = set(cfg.per_dataset) - {c.dataset for c in cells}
    if unknown:
        raise ConfigError(f"{where}: per_dataset.{sorted(unknown)[0]}: not one of the sweep's datasets")
    return cells
