"""Tags <-> spans: strict IOB2 entity spans from BIO tags, and BIO tags from spans."""

from __future__ import annotations

from collections.abc import Sequence


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Strict IOB2 entity spans `(type, start, end)` with `end` exclusive.

    An entity is B-X followed by I-X*. An I-X that does not continue an open X entity
    starts nothing (seqeval's strict mode counts no entity for it).
    """
    out: list[tuple[str, int, int]] = []
    cur_type, cur_start = None, 0
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and cur_type == tag[2:]:
            continue
        if cur_type is not None:
            out.append((cur_type, cur_start, i))
            cur_type = None
        if tag.startswith("B-"):
            cur_type, cur_start = tag[2:], i
    if cur_type is not None:
        out.append((cur_type, cur_start, len(tags)))
    return out


def spans_to_tags(n_words: int, typed_spans: Sequence[tuple[str, int, int]]) -> list[str]:
    """BIO tags from `(type, start, end_inclusive)` spans; an overlapping later span is dropped."""
    tags = ["O"] * n_words
    for typ, s, e in typed_spans:
        if any(t != "O" for t in tags[s : e + 1]):
            continue
        tags[s] = f"B-{typ}"
        for k in range(s + 1, e + 1):
            tags[k] = f"I-{typ}"
    return tags
