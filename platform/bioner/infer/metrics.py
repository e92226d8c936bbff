"""Entity-level scoring (strict IOB2, as seqeval's strict mode), MRC span decoding, bootstrap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.tags import spans


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], types: Sequence[str]) -> np.ndarray:
    """Per sentence and type: (true positives, predicted, gold). Shape (n_sentences, n_types, 3).

    Kept per sentence so that bootstrap resampling is a sum over rows.
    """
    index = {t: k for k, t in enumerate(types)}
    out = np.zeros((len(gold), len(types), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gs, ps = set(spans(g)), set(spans(p))
        for t, *_ in gs & ps:
            out[i, index[t], 0] += 1
        for t, *_ in ps:
            out[i, index[t], 1] += 1
        for t, *_ in gs:
            out[i, index[t], 2] += 1
    return out


def prf(tp: float, n_pred: float, n_gold: float) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def score(gold, pred, types: Sequence[str]) -> dict[str, float]:
    """Micro precision/recall/F1 over all types (fractions in 0..1), plus `f1_<type>` per type."""
    c = sentence_counts(gold, pred, types)
    tot = c.sum(axis=(0, 1))
    p, r, f = prf(*tot)
    out = {"precision": p, "recall": r, "f1": f}
    per_type = c.sum(axis=0)
    for k, t in enumerate(types):
        out[f"f1_{t}"] = prf(*per_type[k])[2]
    return out


def paired_bootstrap(
    counts_a: np.ndarray, counts_b: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Paired bootstrap over sentences: (F1 of a, F1 of b, p-value that b is not better than a).

    p is the fraction of resamples in which b's F1 does not exceed a's.
    """
    a = counts_a.reshape(len(counts_a), -1, 3).sum(axis=1)
    b = counts_b.reshape(len(counts_b), -1, 3).sum(axis=1)
    rng = np.random.default_rng(seed)
    n = len(a)
    not_better = 0
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        if prf(*b[idx].sum(0))[2] <= prf(*a[idx].sum(0))[2]:
            not_better += 1
    return prf(*a.sum(0))[2], prf(*b.sum(0))[2], not_better / n_resamples


def decode_mrc(start_prob: Sequence[float], end_prob: Sequence[float], threshold: float = 0.5) -> list[tuple[int, int]]:
    """Word-level MRC decoding: `(start, end)` spans, `end` inclusive.

    Every word whose start probability wins (> threshold) is a start, likewise ends. Each start
    is paired with the nearest end at or after it; spans do not overlap, so a start inside the
    previous span is skipped.
    """
    starts = [i for i, p in enumerate(start_prob) if p > threshold]
    ends = [i for i, p in enumerate(end_prob) if p > threshold]
    out: list[tuple[int, int]] = []
    j, last_end = 0, -1
    for s in starts:
        if s <= last_end:
            continue
        while j < len(ends) and ends[j] < s:
            j += 1
        if j == len(ends):
            break
        out.append((s, ends[j]))
        last_end = ends[j]
        j += 1
    return out
