"""Tokenisation, label alignment, MRC start/end targets, windows.

Everything is computed once per word: a sentence is tokenised into sub-word pieces per word,
split into overlapping windows when it does not fit, and each window becomes one NER input
`[CLS] s [SEP]` and, per entity type, one MRC input `[CLS] q [SEP] s [SEP]`. Labels sit on the
first piece of every word; other pieces, the query and special tokens are ignored by the losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .tags import spans

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .queries import Queries

IGNORE = -100


def word_pieces(tokenizer: PreTrainedTokenizerBase, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Piece ids per word per sentence, in one batched call of the fast tokenizer.

    A word the tokenizer drops entirely (some control or zero-width characters) becomes [UNK],
    so that every word keeps a position and gets a prediction.
    """
    if not sentences:
        return []
    # verbose=False: no "sequence length is longer than the specified maximum" warning, since a long
    # sentence is cut into windows of at most max_length pieces before any model sees it
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False, verbose=False)
    unk = tokenizer.unk_token_id
    out = []
    for i, words in enumerate(sentences):
        per_word: list[list[int]] = [[] for _ in words]
        for pid, word in zip(enc["input_ids"][i], enc.word_ids(i), strict=True):
            if word is not None:
                per_word[word].append(pid)
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


@dataclass(slots=True)
class NerWindow:
    """One window of a sentence as the NER input `[CLS] pieces [SEP]`, and the MRC rows asking about it."""

    sentence: int  # index of its sentence among those encoded together
    span: Window  # the words it holds, and the words it owns
    input_ids: list[int]
    labels: list[int]  # label id on each word's first piece, IGNORE elsewhere
    first_pos: list[int]  # position of each word's first piece, for the words span.start .. span.end - 1
    o_allowed: tuple[int, ...]  # the labels a gold O stands for (O alone when its corpus annotates every type)
    mrc_rows: list[int] = field(default_factory=list)  # its MRC rows (indices into Encoded.mrc), one per type asked


@dataclass(slots=True)
class MrcRow:
    """One window asked about one entity type: `[CLS] query [SEP] passage [SEP]`, or `[CLS] passage [SEP]`."""

    entity_type: int  # index into the builder's types
    input_ids: list[int]
    token_type_ids: list[int]  # 0 query, 1 passage
    start: list[float]  # 1.0 on the first piece of each entity's first word
    end: list[float]  # 1.0 on the first piece of each entity's last word
    label_mask: list[int]  # 1 on the first piece of each passage word
    offset: int  # position of the passage's first piece


@dataclass
class Encoded:
    """Model inputs for a list of sentences: one NerWindow per window (a sentence longer than the
    budget is several), and the MRC rows of every window, one per entity type its sentence's corpus
    annotates (both tasks see the same windows)."""

    windows: list[NerWindow] = field(default_factory=list)
    mrc: list[MrcRow] = field(default_factory=list)
    n_labels: int = 0

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def partial(self) -> bool:
        """Whether some window's corpus leaves types unannotated (then the NER loss marginalises)."""
        return any(len(window.o_allowed) > 1 for window in self.windows)

    # Whole columns, built on first use, for readers not yet moved to the records (bench.train,
    # experiments/, tests/test_selection.py); the records above are the contract.
    @cached_property
    def ner_ids(self) -> list[list[int]]:
        return [window.input_ids for window in self.windows]

    @cached_property
    def ner_labels(self) -> list[list[int]]:
        return [window.labels for window in self.windows]

    @cached_property
    def sentence(self) -> list[int]:
        return [window.sentence for window in self.windows]

    @cached_property
    def mrc_ids(self) -> list[list[int]]:
        return [r.input_ids for r in self.mrc]

    @cached_property
    def mrc_of(self) -> list[list[int]]:
        return [window.mrc_rows for window in self.windows]


class FeatureBuilder:
    """Turns (tokens, tags) sentences into NER and MRC features for one tokenizer and label set."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        labels: Sequence[str],
        max_length: int = 256,
        queries: Queries | None = None,
        types: Sequence[str] = (),
    ):
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
            raise ValueError(
                f"max_length {max_length} leaves {self.budget} pieces for the sentence after a {longest_q}-piece query"
            )

    def _qids(self, text: str) -> list[int]:
        if text not in self._qcache:
            self._qcache[text] = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
        return self._qcache[text]

    def o_allowed(self, annotated: tuple[str, ...] | None) -> tuple[int, ...]:
        """Label ids a gold O stands for when the corpus annotates `annotated` (None: every type)."""
        key = tuple(self.types) if annotated is None else annotated
        if key not in self._allowed:
            free = [t for t in self.types if t not in key]
            unannotated = tuple(self.label2id[f"{p}-{t}"] for t in free for p in ("B", "I"))
            self._allowed[key] = (self.label2id["O"],) + unannotated
        return self._allowed[key]

    def encode(
        self,
        tokens: Sequence[Sequence[str]],
        tags: Sequence[Sequence[str]] | None = None,
        mrc: bool = False,
        annotated: Sequence[tuple[str, ...]] | None = None,
    ) -> Encoded:
        """NER windows of every sentence and, with `mrc`, one MRC row per window and annotated type
        (`annotated[i]`: the types sentence i's corpus annotates; None: every type)."""
        pieces = word_pieces(self.tok, tokens)
        enc = Encoded(n_labels=len(self.labels))
        for i, words in enumerate(pieces):
            sent_tags = tags[i] if tags is not None else None
            ents = spans(sent_tags) if (mrc and sent_tags is not None) else []
            types = annotated[i] if annotated is not None else None
            for span in make_windows([len(p) for p in words], self.budget):
                window = self._window(i, span, words, sent_tags, types)
                if mrc:
                    for t, typ in enumerate(self.types):
                        if types is None or typ in types:
                            window.mrc_rows.append(len(enc.mrc))
                            enc.mrc.append(self._mrc_row(i, t, window, ents))
                enc.windows.append(window)
        return enc

    def _window(
        self,
        sid: int,
        span: Window,
        words: list[list[int]],
        sent_tags: Sequence[str] | None,
        types: tuple[str, ...] | None,
    ) -> NerWindow:
        ids, labels, first = [self.cls], [IGNORE], []
        for j in range(span.start, span.end):
            p = words[j][: self.budget]
            first.append(len(ids))
            labels.append(self.label2id[sent_tags[j]] if sent_tags is not None else IGNORE)
            labels.extend([IGNORE] * (len(p) - 1))
            ids.extend(p)
        ids.append(self.sep)
        labels.append(IGNORE)
        return NerWindow(sid, span, ids, labels, first, self.o_allowed(types))

    def _mrc_row(self, sid: int, t: int, window: NerWindow, ents: list[tuple[str, int, int]]) -> MrcRow:
        """`window` asked about type `t`: [CLS] q [SEP] passage [SEP], start/end targets on first pieces."""
        typ, span, first = self.types[t], window.span, window.first_pos
        passage = window.input_ids[1:-1]
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
            if span.start <= a < span.end:
                start[first[a - span.start] - 1 + off] = 1.0
            if span.start <= b - 1 < span.end:
                end[first[b - 1 - span.start] - 1 + off] = 1.0
        token_types = [0] * off + [1] * (len(passage) + 1) if q else [0] * len(m_ids)
        return MrcRow(t, m_ids, token_types, start, end, mask, off)
