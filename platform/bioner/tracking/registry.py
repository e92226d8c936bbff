"""MLflow model registry: challenger registration and the significance-gated champion."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..data.iob import read_split
from ..data.specs import CompositeSpec, DatasetSpec, Spec, content_hashes, load_spec
from ..errors import BionerError
from ..infer.metrics import paired_bootstrap, sentence_counts
from ..infer.tagger import Tagger
from .models import resolve_model
from .store import open_store

CHALLENGER, CHAMPION = "challenger", "champion"
# Model-version tags naming exactly what a version was trained and scored on: the spec file's
# SHA-256 and each split file's. Promotion scores only that corpus.
CORPUS_TAG = "corpus.{}_sha256"
SPEC_PATH_TAG = "corpus.spec_path"


def model_name(dataset: str) -> str:
    return f"bioner-{dataset}"


def corpus_tags(spec: Spec) -> dict[str, str]:
    return {SPEC_PATH_TAG: str(spec.path), **{CORPUS_TAG.format(k): v for k, v in content_hashes(spec).items()}}


def register_challenger(client, spec: Spec | str, model_uri: str, description: str, tags: dict) -> str:
    """Register a logged model as a new version of bioner-<dataset>, with alias `challenger`, tagged
    with the hashes of the spec and corpus files it was trained and scored on (`spec`: a spec, or
    its name or path)."""
    import mlflow  # lazy (platform/README.md)

    if isinstance(spec, str):
        spec = load_spec(spec)
    name = model_name(spec.name)
    tags = {**{k: str(v) for k, v in tags.items()}, **corpus_tags(spec)}
    mv = mlflow.register_model(model_uri, name, tags=tags)
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
    changed: bool = True  # False: the challenger already was the champion, and nothing was written


def _version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException  # lazy (platform/README.md)

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _check_corpus(spec: Spec, version, role: str, force: bool) -> None:
    """The version was registered for exactly this spec and corpus (hashes recorded at registration)."""
    now = corpus_tags(spec)
    recorded = {k: version.tags.get(k) for k in now if k != SPEC_PATH_TAG}
    where = f"{model_name(spec.name)} version {version.version} ({role})"
    if not any(recorded.values()):
        if force or role == CHAMPION:  # a champion registered before hashes were recorded is scored on this corpus
            return
        raise BionerError(
            f"{where} records no corpus hashes (registered before they were recorded): "
            "register it again, or --force --reason"
        )
    differ = [k.removeprefix("corpus.").removesuffix("_sha256") for k, v in recorded.items() if v != now[k]]
    if differ and not (force and role == CHAMPION):
        was = version.tags.get(SPEC_PATH_TAG, "?")
        raise BionerError(
            f"--dataset {spec.path}: {', '.join(differ)} differ(s) from what {where} was registered with "
            f"({was}); promotion scores only the corpus a model was registered for"
        )


def promote(
    dataset: Spec | str,
    threshold: float = 0.05,
    resamples: int = 1000,
    seed: int = 0,
    force: bool = False,
    reason: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> Decision:
    """Move `champion` to `challenger` only if it is better on test with paired-bootstrap p <= threshold,
    both scored on the test split of `dataset`, which must be the corpus they were registered with.
    A challenger that already is the champion changes nothing and keeps its decision tags."""
    import mlflow  # lazy (platform/README.md)

    if not 0 < threshold < 1:  # nan fails this too
        raise BionerError(f"threshold {threshold}: a p-value threshold is between 0 and 1 (exclusive)")
    if force and not (reason or "").strip():
        raise BionerError("--force needs --reason TEXT that says why (it is recorded on the model version)")
    spec = dataset if isinstance(dataset, (DatasetSpec, CompositeSpec)) else load_spec(dataset)
    uri = tracking_uri or mlflow.get_tracking_uri()
    open_store(uri, create=False)
    mlflow.set_tracking_uri(uri)  # models:/ URIs below resolve against this store
    client = mlflow.MlflowClient(uri)
    name = model_name(spec.name)
    chal = _version(client, name, CHALLENGER)
    if chal is None:
        raise BionerError(f"model {name} has no '{CHALLENGER}' version in {uri}: run `bioner tune` first")
    champ = _version(client, name, CHAMPION)
    _check_corpus(spec, chal, CHALLENGER, force)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    if champ is not None and champ.version == chal.version:
        # Its decision tags say how it became champion: a second look at the same version keeps them.
        why = f"nothing changed: version {chal.version} is both challenger and champion already"
        return Decision(True, chal.version, champ.version, None, None, None, why, changed=False)
    if champ is None:
        d = Decision(True, chal.version, None, None, None, None, "no champion yet")
    else:
        _check_corpus(spec, champ, CHAMPION, force)
        test = read_split(spec, "test")
        counts = {}
        for v in (champ, chal):
            tagger = Tagger.load(resolve_model(f"models:/{name}/{v.version}"))
            counts[v.version] = sentence_counts(test.tags, tagger.tag(test.tokens, progress=progress), spec.types)
        f_champ, f_chal, p = paired_bootstrap(counts[champ.version], counts[chal.version], resamples, seed)
        better = f_chal > f_champ and p <= threshold
        why = (
            f"challenger F1 {f_chal:.4f} vs champion F1 {f_champ:.4f}, paired bootstrap p = {p:.4f} "
            f"({resamples} resamples, threshold {threshold})"
        )
        if force:
            d = Decision(True, chal.version, champ.version, f_chal, f_champ, p, f"forced: {reason}; {why}")
        else:
            d = Decision(better, chal.version, champ.version, f_chal, f_champ, p, why)

    for k, v in _decision_tags(d, now, threshold, force).items():
        client.set_model_version_tag(name, chal.version, k, v)
    if d.promoted:
        client.set_registered_model_alias(name, CHAMPION, chal.version)
    return d


def _decision_tags(d: Decision, now: str, threshold: float, force: bool) -> dict[str, str]:
    """The challenger version's tags that record a promotion decision."""
    tags = {
        "promotion.decision": "promoted" if d.promoted else "refused",
        "promotion.time": now,
        "promotion.reason": d.reason,
        "promotion.threshold": str(threshold),
    }
    if d.champion_version:
        tags["promotion.against_version"] = d.champion_version
    for k, v in (
        ("promotion.challenger_f1", d.challenger_f1),
        ("promotion.champion_f1", d.champion_f1),
        ("promotion.p_value", d.p_value),
    ):
        if v is not None:
            tags[k] = f"{v:.4f}"
    if force:
        tags["promotion.forced"] = "true"
    return tags
