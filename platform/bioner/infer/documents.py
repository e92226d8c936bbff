"""Documents in, documents out: a Tagger's mentions at document offsets, and scoring by exact span.

A document is split into sentences (data.sentences) as the corpora the models learn from are, so a
300-word abstract is never tagged as one window. Scoring compares mentions as the BioCreative
evaluators do: a mention is right when its document, start, end and type all equal a gold
mention's; duplicates count once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..data.documents import Document, Mention
from ..data.sentences import sentences_of
from .metrics import prf
from .tagger import Tagger, word_spans


def annotate(
    tagger: Tagger,
    docs: Sequence[Document],
    types: Iterable[str] | None = None,
    keep: bool = False,
    progress: bool = False,
) -> list[Document]:
    """Each document with the model's mentions in its passages (a `score` each): existing mentions are
    replaced, or kept beside the new ones with `keep`. The documents are changed in place and returned."""
    wanted = tagger.check_types(types)
    sentences = [(d, s) for d in docs for s in sentences_of(d)]
    tags, probs = (
        tagger.tag_scored([[w for w, _, _ in s.words] for _, s in sentences], progress) if sentences else ([], [])
    )
    if not keep:
        for d in docs:
            for p in d.passages:
                p.mentions = []
    for (doc, s), t, pr in zip(sentences, tags, probs, strict=True):
        passage = doc.passages[s.passage]
        for typ, start, end, score in word_spans(s.words, t, pr):
            if wanted is None or typ in wanted:
                text = passage.text[start - passage.offset : end - passage.offset]
                passage.mentions.append(Mention(start, end, text, typ, score=score))
    for d in docs:
        for p in d.passages:
            p.mentions.sort(key=lambda m: (m.start, m.end))
    return docs


def _key(doc_id: str, m: Mention) -> tuple:
    return (doc_id, m.fragments or ((m.start, m.end),))


@dataclass
class MentionCounts:
    """Per type: [true positives, predicted, gold], summed over documents (or sentences)."""

    per_type: dict[str, list[int]] = field(default_factory=dict)

    def add(self, typ: str, tp: int = 0, pred: int = 0, gold: int = 0) -> None:
        c = self.per_type.setdefault(typ, [0, 0, 0])
        c[0] += tp
        c[1] += pred
        c[2] += gold

    def merge(self, other: MentionCounts) -> MentionCounts:
        for t, (tp, p, g) in other.per_type.items():
            self.add(t, tp, p, g)
        return self

    def total(self) -> tuple[int, int, int]:
        return tuple(sum(c[i] for c in self.per_type.values()) for i in range(3))  # type: ignore[return-value]

    def scores(self) -> dict:
        """{"precision", "recall", "f1", "per_type": {TYPE: {"precision", "recall", "f1", "tp", "fp", "fn"}}}."""
        p, r, f = prf(*self.total())
        per = {}
        for t, (tp, n_pred, n_gold) in self.per_type.items():
            tp_, r_, f_ = prf(tp, n_pred, n_gold)
            per[t] = {"precision": tp_, "recall": r_, "f1": f_, "tp": tp, "fp": n_pred - tp, "fn": n_gold - tp}
        return {"precision": p, "recall": r, "f1": f, "per_type": per}


def count_mentions(gold: Iterable[Document], pred: Iterable[Document], types: Sequence[str]) -> MentionCounts:
    """Exact-span, exact-type mention counts of predicted against gold documents, over `types` (other
    types are not scored: a corpus is only judged on what it annotates). Matched by document ID."""
    wanted = set(types)
    gold_keys: dict[str, set] = {t: set() for t in types}
    pred_keys: dict[str, set] = {t: set() for t in types}
    for docs, keys in ((gold, gold_keys), (pred, pred_keys)):
        for d in docs:
            for m in d.mentions:
                if m.type in wanted:
                    keys[m.type].add(_key(d.id, m))
    out = MentionCounts()
    for t in types:
        out.add(t, len(gold_keys[t] & pred_keys[t]), len(pred_keys[t]), len(gold_keys[t]))
    return out
