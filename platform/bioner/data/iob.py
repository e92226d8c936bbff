"""The two-column IOB reader: streamed, every line validated, errors as `FILE:LINE: reason`."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BionerError, CorpusError
from .doc_corpus import document_sentences
from .specs import DatasetSpec, Spec
from .tags import spans


def _check_tag(tag: str, types: set[str], path: Path, lineno: int) -> None:
    if tag == "O":
        return
    if len(tag) > 2 and tag[:2] in ("B-", "I-"):
        if tag[2:] not in types:
            raise CorpusError(
                path,
                lineno,
                f"entity type {tag[2:]!r} is not declared in the spec (declared: {', '.join(sorted(types))})",
            )
        return
    raise CorpusError(path, lineno, f"tag {tag!r} is not O, B-TYPE or I-TYPE")


def iter_sentences(path: str | os.PathLike, types: Iterable[str]) -> Iterator[tuple[list[str], list[str]]]:
    """Stream (tokens, tags) sentences from a two-column IOB file, validating every line.

    Accepts CRLF, a UTF-8 BOM, blank-line runs and a missing final newline. Raises
    CorpusError(`FILE:LINE: reason`) on the first malformed line.
    """
    path = Path(path)
    if not path.exists():
        raise BionerError(f"{path}: file not found")
    if path.is_dir():
        raise BionerError(f"{path}: is a directory, expected a TSV file")
    types = set(types)
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(
                    path, lineno, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                ) from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    yield tokens, tags
                    tokens, tags = [], []
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CorpusError(path, lineno, f"expected 2 tab-separated fields (token, tag), found {len(fields)}")
            token, tag = fields[0].strip(), fields[1].strip()
            if not token:
                raise CorpusError(path, lineno, "empty token")
            _check_tag(tag, types, path, lineno)
            tokens.append(token)
            tags.append(tag)
    if tokens:
        yield tokens, tags


@dataclass
class Split:
    """A split read into memory: parallel lists of token and tag sequences, and per sentence its
    corpus and the entity types that corpus annotates (all of a single-corpus dataset's)."""

    name: str
    path: Path
    tokens: list[list[str]]
    tags: list[list[str]]
    corpus: list[str]
    annotated: list[tuple[str, ...]]

    def __post_init__(self):
        if len(self.corpus) != len(self.tokens) or len(self.annotated) != len(self.tokens):
            raise ValueError("a split's corpus and annotated lists have one entry per sentence")

    def select(self, keep: Sequence[int], name: str | None = None) -> Split:
        """The sentences `keep`, in that order."""
        return Split(
            name or self.name,
            self.path,
            [self.tokens[i] for i in keep],
            [self.tags[i] for i in keep],
            [self.corpus[i] for i in keep],
            [self.annotated[i] for i in keep],
        )

    @property
    def corpora(self) -> list[str]:
        """The corpora of this split, in order of first appearance."""
        return list(dict.fromkeys(self.corpus))

    def __len__(self) -> int:
        return len(self.tokens)

    def to_dataset(self):
        import datasets  # lazy (platform/README.md)

        return datasets.Dataset.from_dict({"tokens": self.tokens, "tags": self.tags})


def read_split(spec: Spec, split: str) -> Split:
    """One split of every corpus of the dataset (a composite's members one after the other; a member
    without this split contributes nothing, and a dataset with no member that has it is an error)."""
    members = [m for m in spec.members if m.has_split(split)]
    if not members:
        spec.members[0].split_file(split)  # raises, naming the missing key
    return merge([_read_one(m, split) for m in members], split)


def spec_sentences(spec: DatasetSpec, split: str, conv=None) -> Iterator[tuple[list[str], list[str]]]:
    """(words, tags) of one corpus's split, streamed: IOB lines as they are, documents split into sentences."""
    if spec.documents:
        return document_sentences(spec, split, conv)
    return iter_sentences(spec.split_file(split), spec.types)


def _read_one(spec: DatasetSpec, split: str) -> Split:
    path = spec.split_file(split)
    toks, tags = [], []
    for s_tok, s_tag in spec_sentences(spec, split):
        toks.append(s_tok)
        tags.append(s_tag)
    if not toks:
        raise CorpusError(path, 1, "empty split: no sentences")
    annotated = tuple(spec.types)  # one tuple shared by every sentence of the corpus
    return Split(split, path, toks, tags, [spec.name] * len(toks), [annotated] * len(toks))


def read_iob(spec: Spec, split: str):
    """One split as a `datasets.Dataset` with columns `tokens` and `tags`."""
    return read_split(spec, split).to_dataset()


def merge(splits: list[Split], name: str | None = None) -> Split:
    return Split(
        name or "+".join(s.name for s in splits),
        splits[0].path,
        [t for s in splits for t in s.tokens],
        [t for s in splits for t in s.tags],
        [c for s in splits for c in s.corpus],
        [a for s in splits for a in s.annotated],
    )


def subsample(split: Split, fraction: float, seed: int) -> Split:
    """Keep a seeded `fraction` of each corpus's sentences (at least one), in corpus order: a
    composite keeps exactly the sentences each member would keep on its own."""
    if fraction >= 1.0:
        return split
    keep = []
    for c in split.corpora:
        part = [i for i, x in enumerate(split.corpus) if x == c]
        n = max(1, round(len(part) * fraction))
        keep += [part[j] for j in sorted(random.Random(seed).sample(range(len(part)), n))]
    return split.select(keep)


def entity_strings(split: Split) -> dict[str, list[str]]:
    """Entity surface strings per type (strict IOB2 spans), in corpus order, duplicates kept."""
    out: dict[str, list[str]] = {}
    for toks, tags in zip(split.tokens, split.tags, strict=True):
        for typ, a, b in spans(tags):
            out.setdefault(typ, []).append(" ".join(toks[a:b]))
    return out


def split_stats(split: Split) -> dict:
    return _stats(zip(split.tokens, split.tags, strict=True))


def scan_split(spec: DatasetSpec, split: str, conv=None) -> dict:
    """Validate every line of one corpus's split and count it, streaming: memory does not grow with
    the file (a composite's members are scanned one by one). A corpus of documents records what its
    conversion to sentences decided in `conv` (a doc_corpus.Conversion)."""
    path = spec.split_file(split)
    st = _stats(spec_sentences(spec, split, conv))
    if not st["sentences"]:
        raise CorpusError(path, 1, "empty split: no sentences")
    return st


def _stats(sentences: Iterable[tuple[list[str], list[str]]]) -> dict:
    per_type: Counter = Counter()
    n = tokens = longest = 0
    for toks, tags in sentences:
        n += 1
        tokens += len(toks)
        longest = max(longest, len(toks))
        per_type.update(t for t, _, _ in spans(tags))
    return {
        "sentences": n,
        "tokens": tokens,
        "entities": sum(per_type.values()),
        "per_type": dict(per_type),
        "max_words": longest,
    }
