"""Scoring a Tagger on a corpus split, and the token/gold/predicted TSV that `bioner report` reads.

A sentence is scored only on the entity types its corpus annotates: predictions of other types
are neither right nor wrong there (a disease corpus says nothing about its chemicals), so they
become O before scoring. A split of several corpora (a composite dataset) is also scored per
corpus; its overall scores are the micro average over them.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..data.iob import Split
from .metrics import score
from .tagger import Tagger


def restrict(tags: list[list[str]], annotated: list[tuple[str, ...]]) -> list[list[str]]:
    """Each sentence's tags with the types its corpus does not annotate replaced by O."""
    return [[t if t == "O" or t[2:] in types else "O" for t in sent] for sent, types in zip(tags, annotated)]


def evaluate_split(tagger: Tagger, split: Split, types, with_mrc: bool, progress: bool = True, mrc_rows: int = 6000,
                   seed: int = 0) -> tuple[dict, list[list[str]]]:
    """Scores of a tagger on one split, keys prefixed with the split name (per corpus as
    `<split>_<corpus>_f1` when there are several), and the predicted tags as scored."""
    pred = restrict(tagger.tag(split.tokens, progress=progress), split.annotated)
    out = {f"{split.name}_{k}": v for k, v in score(split.tags, pred, types).items()}
    corpora = split.corpora
    if len(corpora) > 1:
        for c in corpora:
            part = [i for i, x in enumerate(split.corpus) if x == c]
            own = list(split.annotated[part[0]])
            s = score([split.tags[i] for i in part], [pred[i] for i in part], own)
            out |= {f"{split.name}_{c}_{k}": v for k, v in s.items()}
    if with_mrc and tagger.has_mrc and mrc_rows > 0:
        sample = mrc_sample(split, mrc_rows, seed)
        mrc = tagger.mrc_tags([split.tokens[i] for i in sample], progress=progress, annotated=[split.annotated[i] for i in sample])
        out[f"mrc_{split.name}_f1"] = score([split.tags[i] for i in sample], mrc, types)["f1"]
        if len(sample) < len(split):
            out[f"mrc_{split.name}_sentences"] = float(len(sample))
    return out, pred


def mrc_sample(split: Split, max_rows: int, seed: int = 0) -> list[int]:
    """Sentences whose MRC rows (one per annotated type) fit in `max_rows`: all of them if they fit,
    else a seeded sample, in corpus order. Scoring the MRC head asks every type about each sentence,
    so on a many-type corpus it would cost more than a training epoch; it is a diagnostic, sampled."""
    rows = sum(len(a) for a in split.annotated)
    if rows <= max_rows:
        return list(range(len(split)))
    per = rows / len(split)
    n = max(1, int(max_rows / per))
    return sorted(random.Random(seed).sample(range(len(split)), n))


def write_predictions(path: Path, split: Split, pred: list[list[str]]) -> Path:
    """token, gold, predicted and corpus per word, a blank line between sentences (what `bioner report` pairs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("token\tgold\tpredicted\tcorpus\n")
        for toks, g, p, c in zip(split.tokens, split.tags, pred, split.corpus):
            for row in zip(toks, g, p):
                f.write("\t".join(row) + f"\t{c}\n")
            f.write("\n")
    return path
