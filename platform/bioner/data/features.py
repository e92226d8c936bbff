"""Tokenisation, label alignment, MRC start/end targets, windows.

Everything is computed once per word: a sentence is tokenised into sub-word pieces per word,
split into overlapping windows when it does not fit, and each window becomes one NER input
`[CLS] s [SEP]` and, per entity type, one MRC input `[CLS] q [SEP] s [SEP]`. Labels sit on the
first piece of every word; other pieces, the query and special tokens are ignored by the losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .tags import spans

IGNORE = -100


def word_pieces(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Piece ids per word per sentence, in one batched call of the fast tokenizer.

    A word the tokenizer drops entirely (some control or zero-width characters) becomes [UNK],
    so that every word keeps a position and gets a prediction.
    """
    if not sentences:
        return []
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    unk = tokenizer.unk_token_id
    out = []
    for i, words in enumerate(sentences):
        per_word: list[list[int]] = [[] for _ in words]
        for pid, w in zip(enc["input_ids"][i], enc.word_ids(i)):
            if w is not None:
                per_word[w].append(pid)
        out.append([p if p else [unk] for p in per_word])
    return out


@dataclass(frozen=True)
class Window:
    """Words [start, end) go to the encoder; words [own_start, own_end) take their predictions from it."""

    start: int
    end: int
    own_start: int
    own_end: int


def make_windows(n_pieces: Sequence[int], budget: int) -> list[Window]:
    """Cover a sentence with windows of at most `budget` pieces, overlapping by about half.

    Each word is owned by exactly one window, the one where it has most context on both
    sides, so every word gets exactly one prediction. A single word longer than the budget is
    cut to `budget` pieces (it still has its first piece, which carries its label).
    """
    n = len(n_pieces)
    if sum(min(k, budget) for k in n_pieces) <= budget:
        return [Window(0, n, 0, n)]
    spans_: list[tuple[int, int]] = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and used + min(n_pieces[end], budget) <= budget:
            used += min(n_pieces[end], budget)
            end += 1
        end = max(end, start + 1)
        spans_.append((start, end))
        if end >= n:
            break
        start = max(start + 1, start + (end - start) // 2)
    out = []
    for k, (s, e) in enumerate(spans_):
        own_s = 0 if k == 0 else (s + spans_[k - 1][1]) // 2
        own_e = n if k == len(spans_) - 1 else (spans_[k + 1][0] + e) // 2
        out.append(Window(s, e, own_s, max(own_s, own_e)))
    return out


@dataclass
class Encoded:
    """Model inputs for a list of sentences. Row k of the NER columns is window k; `mrc_of[k]` are the
    MRC rows of window k, one per entity type its sentence's corpus annotates (both tasks see the
    same windows). `o_allowed[k]`: the labels a gold O stands for in window k, O and the B-/I- labels
    of every type its corpus does not annotate (just O when the corpus annotates every type)."""

    sentence: list[int] = field(default_factory=list)  # window -> sentence index
    window: list[Window] = field(default_factory=list)
    first_pos: list[list[int]] = field(default_factory=list)  # window -> position of each word's first piece (NER input)
    ner_ids: list[list[int]] = field(default_factory=list)
    ner_labels: list[list[int]] = field(default_factory=list)
    o_allowed: list[tuple[int, ...]] = field(default_factory=list)
    mrc_of: list[list[int]] = field(default_factory=list)
    mrc_ids: list[list[int]] = field(default_factory=list)
    mrc_entity_type: list[int] = field(default_factory=list)  # MRC row -> index of its entity type
    mrc_token_types: list[list[int]] = field(default_factory=list)  # token_type_ids: 0 query, 1 passage
    mrc_start: list[list[float]] = field(default_factory=list)
    mrc_end: list[list[float]] = field(default_factory=list)
    mrc_mask: list[list[int]] = field(default_factory=list)
    mrc_offset: list[int] = field(default_factory=list)  # MRC row -> position of the passage's first piece
    n_labels: int = 0

    def __len__(self) -> int:
        return len(self.ner_ids)

    @property
    def partial(self) -> bool:
        """Whether some window's corpus leaves types unannotated (then the NER loss marginalises)."""
        return any(len(a) > 1 for a in self.o_allowed)


class FeatureBuilder:
    """Turns (tokens, tags) sentences into NER and MRC features for one tokenizer and label set."""

    def __init__(self, tokenizer, labels: Sequence[str], max_length: int = 256, queries=None, types: Sequence[str] = ()):
        self.tok = tokenizer
        self.labels = list(labels)
        self.label2id = {lab: i for i, lab in enumerate(self.labels)}
        self.max_length = max_length
        self.queries = queries
        self.types = list(types)
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self._qcache: dict[str, list[int]] = {}
        self._allowed: dict[tuple[str, ...], tuple[int, ...]] = {}
        longest_q = 0
        if queries is not None:
            longest_q = max(len(self._qids(q)) for t in self.types for q in queries.all_texts(t))
        # [CLS] q [SEP] s [SEP] when there is a query, [CLS] s [SEP] otherwise
        self.budget = max_length - (3 + longest_q if longest_q else 2)
        if self.budget < 8:
            raise ValueError(f"max_length {max_length} leaves {self.budget} pieces for the sentence after a {longest_q}-piece query")

    def _qids(self, text: str) -> list[int]:
        if text not in self._qcache:
            self._qcache[text] = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
        return self._qcache[text]

    def o_allowed(self, annotated: tuple[str, ...] | None) -> tuple[int, ...]:
        """Label ids a gold O stands for when the corpus annotates `annotated` (None: every type)."""
        key = tuple(self.types) if annotated is None else annotated
        if key not in self._allowed:
            free = [t for t in self.types if t not in key]
            self._allowed[key] = (self.label2id["O"],) + tuple(self.label2id[f"{p}-{t}"] for t in free for p in ("B", "I"))
        return self._allowed[key]

    def encode(self, tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None, mrc: bool = False,
               annotated: Sequence[tuple[str, ...]] | None = None) -> Encoded:
        """NER windows of every sentence and, with `mrc`, one MRC row per window and annotated type
        (`annotated[i]`: the types sentence i's corpus annotates; None: every type)."""
        pieces = word_pieces(self.tok, tokens)
        enc = Encoded(n_labels=len(self.labels))
        for i, words in enumerate(pieces):
            sent_tags = tags[i] if tags is not None else None
            ents = spans(sent_tags) if (mrc and sent_tags is not None) else []
            types = annotated[i] if annotated is not None else None
            for w in make_windows([len(p) for p in words], self.budget):
                self._add_window(enc, i, w, words, sent_tags, types)
                enc.mrc_of.append([self._add_mrc_row(enc, i, t, w, enc.first_pos[-1], enc.ner_ids[-1], ents)
                                   for t, typ in enumerate(self.types) if mrc and (types is None or typ in types)])
        return enc

    def _add_window(self, enc: Encoded, sid: int, w: Window, words, sent_tags, types) -> None:
        ids, labels, first = [self.cls], [IGNORE], []
        for j in range(w.start, w.end):
            p = words[j][: self.budget]
            first.append(len(ids))
            labels.append(self.label2id[sent_tags[j]] if sent_tags is not None else IGNORE)
            labels.extend([IGNORE] * (len(p) - 1))
            ids.extend(p)
        ids.append(self.sep)
        labels.append(IGNORE)
        enc.sentence.append(sid)
        enc.window.append(w)
        enc.first_pos.append(first)
        enc.ner_ids.append(ids)
        enc.ner_labels.append(labels)
        enc.o_allowed.append(self.o_allowed(types))

    def _add_mrc_row(self, enc: Encoded, sid: int, t: int, w: Window, first: list[int], ner_ids: list[int], ents) -> int:
        """Window `w` asked about type `t`: [CLS] q [SEP] passage [SEP], start/end targets on first pieces."""
        typ = self.types[t]
        passage = ner_ids[1:-1]
        q = self._qids(self.queries.text(typ, sid))
        head = [self.cls] + q + [self.sep] if q else [self.cls]
        off = len(head)
        m_ids = head + passage + [self.sep]
        start = [0.0] * len(m_ids)
        end = [0.0] * len(m_ids)
        mask = [0] * len(m_ids)
        for pos in first:
            mask[pos - 1 + off] = 1
        for et, a, b in ents:
            if et != typ:
                continue
            if w.start <= a < w.end:
                start[first[a - w.start] - 1 + off] = 1.0
            if w.start <= b - 1 < w.end:
                end[first[b - 1 - w.start] - 1 + off] = 1.0
        enc.mrc_ids.append(m_ids)
        enc.mrc_entity_type.append(t)
        enc.mrc_token_types.append([0] * off + [1] * (len(passage) + 1) if q else [0] * len(m_ids))
        enc.mrc_start.append(start)
        enc.mrc_end.append(end)
        enc.mrc_mask.append(mask)
        enc.mrc_offset.append(off)
        return len(enc.mrc_ids) - 1
