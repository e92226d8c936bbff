"""Scoring a Tagger on a corpus split, and the token/gold/predicted TSV that `bioner report` reads."""

from __future__ import annotations

from pathlib import Path

from ..data.iob import Split
from .metrics import score
from .tagger import Tagger


def evaluate_split(tagger: Tagger, split: Split, types, with_mrc: bool, progress: bool = True) -> tuple[dict, list[list[str]]]:
    """Scores of a tagger on one split, keys prefixed with the split name."""
    pred = tagger.tag(split.tokens, progress=progress)
    s = score(split.tags, pred, types)
    out = {f"{split.name}_{k}": v for k, v in s.items()}
    if with_mrc and tagger.has_mrc:
        out[f"mrc_{split.name}_f1"] = score(split.tags, tagger.mrc_tags(split.tokens, progress=progress), types)["f1"]
    return out, pred


def write_predictions(path: Path, tokens, gold, pred) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("token\tgold\tpredicted\n")
        for toks, g, p in zip(tokens, gold, pred):
            for row in zip(toks, g, p):
                f.write("\t".join(row) + "\n")
            f.write("\n")
    return path
