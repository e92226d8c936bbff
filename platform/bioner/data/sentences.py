"""Raw text -> sentences and words with offsets; annotated documents -> BIO-tagged training sentences.

Sentences come from syntok's rule-based segmenter (abbreviations such as `e.g.`, `Fig. 2` or `Dr.`
do not end a sentence), chosen by `experiments/benchmarks/splitters.py` against the NCBI-disease
corpus's own sentence split. Only the positions where sentences start are taken from it: every
offset is checked against the text and the sentences are cut from the text itself, so they cover
every non-space character whatever the segmenter did with it; a failed check falls back to a
punctuation rule. The public API does not depend on which segmenter runs.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field, fields
from itertools import pairwise

from syntok import segmenter as _syntok

from ..errors import BionerError
from .documents import Document, Mention, Passage

# Corpus-style word split: runs of letters/digits, or any single other visible character.
# The three corpora split punctuation off words the same way. Control and invisible format
# characters (C0/C1 controls, zero-width and bidi marks, BOM) and lone surrogates are never
# words: the tokenizer drops them, and a surrogate cannot even be encoded for it.
_INVISIBLE = "\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ud800-\udfff"
WORD_RE = re.compile(rf"\w+|[^\w\s{_INVISIBLE}]", re.UNICODE)

# The fallback: a sentence ends at . ? or ! followed by whitespace and an uppercase letter or digit.
_FALLBACK_START = re.compile(r"(?<=[.?!])\s+(?=[A-Z0-9])")
_WORD_CHAR = re.compile(r"\w")

Word = tuple[str, int, int]


def split_words(text: str) -> list[Word]:
    """(word, start, end) with character offsets into `text`."""
    return [(m.group(), m.start(), m.end()) for m in WORD_RE.finditer(text)]


@dataclass(frozen=True)
class Sentence:
    """A sentence of one passage; `start`/`end` and each word's offsets are document offsets."""

    doc_id: str
    passage: int  # index of its passage in doc.passages
    start: int
    end: int  # after its last character
    words: tuple[Word, ...]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets within `text`: no leading or trailing whitespace, every non-space
    character in exactly one sentence, never a cut inside a run of word characters. A text with no
    sentence terminator is one sentence; a whitespace-only text has none."""
    starts = _syntok_starts(text)
    if starts is None:
        starts = [m.end() for m in _FALLBACK_START.finditer(text)]
    cuts = [0] + [c for c in starts if 0 < c < len(text) and not _inside_word(text, c)] + [len(text)]
    out = []
    for a, b in pairwise(cuts):
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            s = a + (len(piece) - len(piece.lstrip()))
            out.append((s, s + len(stripped)))
    return out


def _syntok_starts(text: str) -> list[int] | None:
    """Where syntok's sentences start, or None when any token's offset does not point at its text."""
    starts = []
    try:
        for paragraph in _syntok.analyze(text):
            for sentence in paragraph:
                tokens = [t for t in sentence if t.value]  # a paragraph's trailing spaces come as an empty token
                for t in tokens:
                    if text[t.offset : t.offset + len(t.value)] != t.value:
                        return None
                if tokens:
                    starts.append(tokens[0].offset)
    except Exception:  # the segmenter failing on odd text falls back to the rule rather than fail the caller
        return None
    if any(a >= b for a, b in pairwise(starts)):
        return None
    return starts


def _inside_word(text: str, cut: int) -> bool:
    return bool(_WORD_CHAR.match(text[cut - 1]) and _WORD_CHAR.match(text[cut]))


def _passage_sentences(doc_id: str, index: int, p: Passage) -> list[Sentence]:
    out = []
    for s, e in split_sentences(p.text):
        base = p.offset + s
        words = tuple((w, base + a, base + b) for w, a, b in split_words(p.text[s:e]))
        if words:  # a sentence of invisible characters only has nothing to tag
            out.append(Sentence(doc_id, index, p.offset + s, p.offset + e, words))
    return out


def sentences_of(doc: Document) -> list[Sentence]:
    """The document's sentences, passage by passage (a sentence never crosses a passage), each with
    its words from `split_words`. Sentences without a word (invisible characters only) are left out."""
    return [s for i, p in enumerate(doc.passages) for s in _passage_sentences(doc.id, i, p)]


# --- annotated documents -> BIO sentences ------------------------------------------------------

_WHAT = {
    "crossing": "mentions crossing a sentence boundary (those sentences joined)",
    "nested": "mentions inside or overlapping a longer mention (the longest tagged, these not)",
    "discontinuous": "discontinuous mentions (tagged from the first fragment's start to the last one's end)",
    "split_words": "mentions starting or ending inside a word (the word split there)",
    "no_words": "mentions covering no word (nothing tagged)",
}


@dataclass
class Decisions:
    """What converting documents to BIO sentences had to decide: every place (`SOURCE:DOC:START`,
    the mention's document offset) of each kind, so that counts are exact."""

    crossing: list[str] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)
    discontinuous: list[str] = field(default_factory=list)
    split_words: list[str] = field(default_factory=list)
    no_words: list[str] = field(default_factory=list)

    def merge(self, other: Decisions) -> None:
        for f in fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))

    def summary(self, first: int = 3) -> list[tuple[str, int, list[str]]]:
        """(what, count, the first `first` places) of every kind, in a fixed order, zero counts too."""
        return [(_WHAT[f.name], len(getattr(self, f.name)), getattr(self, f.name)[:first]) for f in fields(self)]


def labelled_sentences(doc: Document, decisions: Decisions) -> list[tuple[Sentence, list[str]]]:
    """The document's sentences, each with one BIO tag per word (`B-TYPE`/`I-TYPE` from `Mention.type`,
    already mapped to the dataset's types), recording in `decisions` what had to be decided:

    - a mention crossing a sentence boundary joins those sentences into one;
    - of mentions that nest or overlap, the longest is tagged and the others counted (the IOB corpora
      tag nested mentions the same way: by the outer one only);
    - a discontinuous mention is tagged over its whole extent, first fragment's start to last one's end;
    - a word that a mention starts or ends inside is split there, so that the tags are exact (the
      sentence's words are then those pieces, each still the document's text at its offsets);
    - a mention of whitespace or invisible characters only tags nothing.
    """
    out = []
    for index, p in enumerate(doc.passages):
        kept = _kept_extents(doc, p, decisions)
        ends = [m[1] for m in kept]  # kept mentions never overlap: their ends are in order too
        for sentence in _joined(_passage_sentences(doc.id, index, p), kept, decisions):
            inside = kept[bisect.bisect_right(ends, sentence.start) : bisect.bisect_left(kept, (sentence.end,))]
            out.append(_tagged(sentence, p, inside, decisions))
    return out


# A mention to tag: (start, end, type, place), its extent trimmed of whitespace.
Kept = tuple[int, int, str, str]
_VISIBLE = re.compile(rf"[^\s{_INVISIBLE}]")


def _extent(doc: Document, p: Passage, m: Mention, decisions: Decisions) -> Kept | None:
    place = f"{doc.source}:{doc.id}:{m.start}"
    start, end = m.start, m.end
    if m.discontinuous:
        start, end = min(a for a, _ in m.fragments), max(b for _, b in m.fragments)
        decisions.discontinuous.append(place)
    if not (p.offset <= start < end <= p.end):
        raise BionerError(
            f"{doc.where(start)}: mention {m.text!r} [{start}, {end}) is not inside its passage [{p.offset}, {p.end})"
        )
    text = p.text[start - p.offset : end - p.offset]
    if not _VISIBLE.search(text):  # every visible character is (part of) a word: none here
        decisions.no_words.append(place)
        return None
    return start + len(text) - len(text.lstrip()), end - (len(text) - len(text.rstrip())), m.type, place


def _kept_extents(doc: Document, p: Passage, decisions: Decisions) -> list[Kept]:
    """The passage's mentions to tag, in offset order: the longest of any that overlap, the others
    counted as nested."""
    extents = [x for m in p.mentions if (x := _extent(doc, p, m, decisions)) is not None]
    kept: list[Kept] = []
    for x in sorted(extents, key=lambda x: (x[0] - x[1], x[0])):  # longest first, then leftmost
        i = bisect.bisect_left(kept, (x[0],))
        if (i > 0 and kept[i - 1][1] > x[0]) or (i < len(kept) and kept[i][0] < x[1]):
            decisions.nested.append(x[3])
        else:
            kept.insert(i, x)
    return kept


def _joined(sentences: list[Sentence], kept: list[Kept], decisions: Decisions) -> list[Sentence]:
    """The sentences with each run that a mention crosses joined into one."""
    starts = [s.start for s in sentences]
    join_next = [False] * len(sentences)  # join_next[i]: sentence i and i + 1 are one
    for start, end, _, place in kept:
        i, j = max(bisect.bisect_right(starts, start) - 1, 0), max(bisect.bisect_right(starts, end - 1) - 1, 0)
        if i != j:
            decisions.crossing.append(place)
            join_next[i:j] = [True] * (j - i)
    out: list[Sentence] = []
    for k, s in enumerate(sentences):
        if k and join_next[k - 1]:
            last = out[-1]
            out[-1] = Sentence(last.doc_id, last.passage, last.start, s.end, last.words + s.words)
        else:
            out.append(s)
    return out


def _tagged(sentence: Sentence, p: Passage, inside: list[Kept], decisions: Decisions) -> tuple[Sentence, list[str]]:
    """The sentence with its words split where a mention in it starts or ends inside one, and its BIO tags."""
    cuts = sorted({x for start, end, _, _ in inside for x in (start, end)})
    words: list[Word] = []
    split: set[int] = set()  # cut points inside a word
    for w, a, b in sentence.words:
        points = cuts[bisect.bisect_right(cuts, a) : bisect.bisect_left(cuts, b)]
        if points:
            split.update(points)
            words += [
                (p.text[x - p.offset : y - p.offset], x, y) for x, y in zip([a] + points, points + [b], strict=True)
            ]
        else:
            words.append((w, a, b))
    starts = [a for _, a, _ in words]
    tags = ["O"] * len(words)
    for start, end, typ, place in inside:
        if start in split or end in split:
            decisions.split_words.append(place)
        first, stop = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)  # words split at both ends
        if stop > first:
            tags[first:stop] = [f"B-{typ}"] + [f"I-{typ}"] * (stop - first - 1)
        else:  # unreachable while every visible character is in a word of its sentence; kept so counts stay exact
            decisions.no_words.append(place)
    return Sentence(sentence.doc_id, sentence.passage, sentence.start, sentence.end, tuple(words)), tags
