"""Scoring a Tagger on a corpus split, and the token/gold/predicted TSV that `bioner report` reads.

A sentence is scored only on the entity types its corpus annotates: predictions of other types
are neither right nor wrong there (a disease corpus says nothing about its chemicals), so they
become O before scoring. A split of several corpora (a composite dataset) is also scored per
corpus; its overall scores are the micro average over them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from ..data.doc_corpus import gold_documents
from ..data.iob import Split, read_split
from ..data.specs import Spec
from .documents import MentionCounts, annotate, count_mentions
from .metrics import score, sentence_counts
from .tagger import Tagger


def restrict(tags: list[list[str]], annotated: list[tuple[str, ...]]) -> list[list[str]]:
    """Each sentence's tags with the types its corpus does not annotate replaced by O."""
    return [
        [t if t == "O" or t[2:] in types else "O" for t in sent] for sent, types in zip(tags, annotated, strict=True)
    ]


def evaluate_split(
    tagger: Tagger,
    split: Split,
    types: Sequence[str],
    with_mrc: bool,
    progress: bool = True,
    mrc_rows: int = 6000,
    seed: int = 0,
) -> tuple[dict[str, float], list[list[str]]]:
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
        mrc = tagger.mrc_tags(
            [split.tokens[i] for i in sample], progress=progress, annotated=[split.annotated[i] for i in sample]
        )
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
        for toks, g, p, c in zip(split.tokens, split.tags, pred, split.corpus, strict=True):
            for row in zip(toks, g, p, strict=True):
                f.write("\t".join(row) + f"\t{c}\n")
            f.write("\n")
    return path


def corpus_counts(tagger: Tagger, spec: Spec, split: str, progress: bool = True) -> dict[str, MentionCounts]:
    """Mention counts per member corpus of a dataset, each scored on the types it annotates: an IOB
    corpus by strict IOB2 spans per sentence, a corpus of documents by exact character span per document."""
    out: dict[str, MentionCounts] = {}
    for m in spec.members:
        if not m.has_split(split):
            continue
        if m.documents:
            gold = list(gold_documents(m, split))
            pred = annotate(tagger, [d.without_mentions() for d in gold], progress=progress)
            out[m.name] = count_mentions(gold, pred, m.types)
            continue
        data = read_split(m, split)
        pred = restrict(tagger.tag(data.tokens, progress=progress), data.annotated)
        c = sentence_counts(data.tags, pred, m.types).sum(axis=0)
        counts = MentionCounts()
        for k, t in enumerate(m.types):
            counts.add(t, *(int(x) for x in c[k]))
        out[m.name] = counts
    return out


def scores_report(per_corpus: dict[str, MentionCounts]) -> dict:
    """The scores of `bioner evaluate --json`: overall (micro over corpora), per type, and per corpus."""
    total = MentionCounts()
    for c in per_corpus.values():
        total.merge(c)
    return total.scores() | {"per_corpus": {name: c.scores() for name, c in per_corpus.items()}}


def flat_metrics(report: dict, split: str) -> dict[str, float]:
    """The report as the metric names training logs (`test_f1`, `test_f1_<type>`, `test_<corpus>_f1`)."""
    out = {f"{split}_{k}": report[k] for k in ("precision", "recall", "f1")}
    out |= {f"{split}_f1_{t}": s["f1"] for t, s in report["per_type"].items()}
    if len(report["per_corpus"]) > 1:
        for name, r in report["per_corpus"].items():
            out |= {f"{split}_{name}_{k}": r[k] for k in ("precision", "recall", "f1")}
            out |= {f"{split}_{name}_f1_{t}": s["f1"] for t, s in r["per_type"].items()}
    return out
