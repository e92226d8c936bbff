"""`bioner extend`: a trained model learns new entity types without forgetting the ones it knows.

It starts from the model's weights: its token-head rows are kept bit for bit and rows for the new
types are added (the MRC heads are type-free: a new type only needs its queries). It trains on a
composite of the corpora it was trained on and the new spec (rehearsal): each corpus goes on
teaching the types it annotates and is never read as "none of the other types" (the partial-
annotation loss). The run carries the parent model's URI as a tag; the result is registered as a
new version of `bioner-<name>`, whose description lists its types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import TrainConfig, load_config
from ..data.specs import Spec, load_spec
from ..errors import BionerError
from ..model import ModelMeta, check_model_folder
from ..tracking.models import resolve_model
from ..tracking.registry import register_challenger
from ..tracking.store import prepare_output_dir
from .tags import KIND
from .training import TrainResult, run_training

PARENT_MODEL = "bioner.parent_model"  # tag of the extension's run: the model it started from


@dataclass
class ExtendOutcome:
    result: TrainResult
    spec_path: Path
    name: str
    types: list[str]
    added: list[str]
    version: str | None


def extension_spec(meta: ModelMeta, add: Spec, out_dir: Path, name: str | None, base: str | None) -> tuple[Path, str]:
    """Write the composite spec of the model's corpora and the added one into <output_dir>/datasets."""
    olds = [base] if base else meta.corpus_names
    members = []
    for old in olds:
        try:
            members.append(str(load_spec(old).path))
        except BionerError as e:
            raise BionerError(
                f"the model was trained on dataset {old!r}, which is needed to rehearse its types: {e} "
                "(add its folder to $BIONER_DATASETS, or name its spec with --base)"
            ) from None
    name = name or f"{meta.dataset}+{add.name}"
    path = out_dir / "datasets" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump({"name": name, "corpora": members + [str(add.path)]}, sort_keys=False), encoding="utf-8"
    )
    return path, name


def extension_config(meta: ModelMeta, folder: Path, spec_path: Path, overrides: list[str] | None) -> TrainConfig:
    """The model's own settings (tokenizer, max length, query source, task), then `--set` values."""
    queries = meta.queries
    defaults = [
        f"dataset={spec_path}",
        f"encoder={folder}",
        f"init_from={folder}",
        f"max_length={meta.max_length}",
        f"dropout={meta.dropout}",
        f"beta={1.0 if meta.multitask else 0.0}",
        "experiment=extend",
    ]
    if queries:
        defaults.append(f"query_source={queries['source']}")
    return load_config(TrainConfig, None, defaults + list(overrides or []))


def run_extend(
    model_uri: str,
    add: str,
    overrides: list[str] | None = None,
    name: str | None = None,
    base: str | None = None,
    register: bool = True,
    progress: bool = True,
) -> ExtendOutcome:
    from mlflow import MlflowClient  # lazy (platform/README.md)

    folder = resolve_model(model_uri)
    # The checks `bioner predict` runs, here in the driver: a missing file or truncated weights is one
    # line before Ray starts or a run opens, not a worker's traceback.
    meta, _, _ = check_model_folder(folder)
    added_spec = load_spec(add)
    known = {t.casefold(): t for t in meta.types}
    for t in added_spec.types:
        if t not in meta.types and t.casefold() in known:  # two spellings would become two types
            raise BionerError(
                f"--add {add}: type {t!r} differs only in case from the model's {known[t.casefold()]!r}: "
                "they would be two types; spell it as the model does"
            )
    added = [t for t in added_spec.types if t not in meta.types]
    if not added:
        raise BionerError(
            f"--add {add}: the model knows every type of it already ({', '.join(added_spec.types)}); nothing to add"
        )
    out_dir = prepare_output_dir(load_config(TrainConfig, None, overrides).output_dir)
    spec_path, name = extension_spec(meta, added_spec, out_dir, name, base)
    cfg = extension_config(meta, folder, spec_path, overrides)
    res = run_training(cfg, progress=progress, tags={KIND: "extend", PARENT_MODEL: model_uri})
    spec = load_spec(spec_path)
    types = spec.types
    version = None
    if register:
        desc = (
            f"Entity types: {', '.join(types)}. Extended from {model_uri} (types {', '.join(meta.types)}) with "
            f"{', '.join(added)} from {added_spec.name}; trained on {spec_path.name} (run {res.run_id})."
        )
        version = register_challenger(
            MlflowClient(cfg.resolved_tracking_uri()),
            spec,
            res.model_uri,
            desc,
            {"parent_model": model_uri, "types": ",".join(types), "run_id": res.run_id},
        )
    return ExtendOutcome(res, spec_path, name, types, added, version)
