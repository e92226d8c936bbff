"""MLflow model registry: challenger registration and the significance-gated champion."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..data.iob import read_split
from ..data.specs import load_spec
from ..errors import BionerError
from ..infer.metrics import paired_bootstrap, sentence_counts
from ..infer.tagger import Tagger
from .models import resolve_model

CHALLENGER, CHAMPION = "challenger", "champion"


def model_name(dataset: str) -> str:
    return f"bioner-{dataset}"


def register_challenger(client, dataset: str, model_uri: str, description: str, tags: dict) -> str:
    """Register a logged model as a new version of bioner-<dataset>, with alias `challenger`."""
    import mlflow  # lazy: start-up time

    name = model_name(dataset)
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    client.update_model_version(name, mv.version, description=description)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


@dataclass
class Decision:
    promoted: bool
    challenger_version: str
    champion_version: str | None
    challenger_f1: float | None
    champion_f1: float | None
    p_value: float | None
    reason: str


def _version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException  # lazy: start-up time

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(dataset: str, threshold: float = 0.05, resamples: int = 1000, seed: int = 0, force: bool = False,
            reason: str | None = None, tracking_uri: str | None = None, progress: bool = True) -> Decision:
    """Move `champion` to `challenger` only if it is better on test with paired-bootstrap p <= threshold."""
    from mlflow import MlflowClient  # lazy: start-up time

    if force and not reason:
        raise BionerError("--force needs --reason TEXT (it is recorded on the model version)")
    client = MlflowClient(tracking_uri)
    name = model_name(dataset)
    chal = _version(client, name, CHALLENGER)
    if chal is None:
        raise BionerError(f"model {name} has no '{CHALLENGER}' version: run `bioner tune` first")
    champ = _version(client, name, CHAMPION)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    if champ is None or champ.version == chal.version:
        d = Decision(True, chal.version, None, None, None, None, "no champion yet")
    else:
        spec = load_spec(dataset)
        test = read_split(spec, "test")
        counts = {}
        for v in (champ, chal):
            tagger = Tagger.load(resolve_model(f"models:/{name}/{v.version}"))
            counts[v.version] = sentence_counts(test.tags, tagger.tag(test.tokens, progress=progress), spec.types)
        f_champ, f_chal, p = paired_bootstrap(counts[champ.version], counts[chal.version], resamples, seed)
        better = f_chal > f_champ and p <= threshold
        why = (f"challenger F1 {f_chal:.4f} vs champion F1 {f_champ:.4f}, paired bootstrap p = {p:.4f} "
               f"({resamples} resamples, threshold {threshold})")
        if force:
            d = Decision(True, chal.version, champ.version, f_chal, f_champ, p, f"forced: {reason}; {why}")
        else:
            d = Decision(better, chal.version, champ.version, f_chal, f_champ, p, why)

    tags = {"promotion.decision": "promoted" if d.promoted else "refused", "promotion.time": now,
            "promotion.reason": d.reason, "promotion.threshold": str(threshold)}
    if d.champion_version:
        tags["promotion.against_version"] = d.champion_version
    for k, v in (("promotion.challenger_f1", d.challenger_f1), ("promotion.champion_f1", d.champion_f1), ("promotion.p_value", d.p_value)):
        if v is not None:
            tags[k] = f"{v:.4f}"
    if force:
        tags["promotion.forced"] = "true"
    for k, v in tags.items():
        client.set_model_version_tag(name, chal.version, k, v)
    if d.promoted:
        client.set_registered_model_alias(name, CHAMPION, chal.version)
    return d
