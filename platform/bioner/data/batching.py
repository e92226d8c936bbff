"""Batches of encoded rows: padded tensors, length-grouped training batches, inference batches.

Rows are padded to the longest row of their batch, never to max_length.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence

import torch

from .batch_types import MrcBatch, NerBatch
from .features import IGNORE, Encoded


def pad(rows: Sequence[Sequence[float]], value: float, dtype: torch.dtype, multiple: int = 1) -> torch.Tensor:
    """Pad to the longest row of this batch (rounded up to `multiple`), never to max_length."""
    width = max(len(r) for r in rows)
    width = int(math.ceil(width / multiple) * multiple)
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=dtype)
    return out


def ner_batch(enc: Encoded, window_ids: Sequence[int], pad_id: int, multiple: int = 1) -> NerBatch:
    """NER windows `window_ids`; with partial annotation also `o_allowed` (rows x labels): what a gold O allows."""
    windows = [enc.windows[k] for k in window_ids]
    ids = [window.input_ids for window in windows]
    out = NerBatch(
        input_ids=pad(ids, pad_id, torch.long, multiple),
        attention_mask=pad([[1] * len(x) for x in ids], 0, torch.long, multiple),
        labels=pad([window.labels for window in windows], IGNORE, torch.long, multiple),
    )
    if any(len(window.o_allowed) > 1 for window in windows):
        allowed = torch.zeros((len(windows), enc.n_labels), dtype=torch.bool)
        for j, window in enumerate(windows):
            allowed[j, list(window.o_allowed)] = True
        out["o_allowed"] = allowed
    return out


def mrc_rows(enc: Encoded, window_ids: Iterable[int]) -> list[int]:
    """MRC rows belonging to NER windows `window_ids` (every annotated type of each window)."""
    return [r for k in window_ids for r in enc.windows[k].mrc_rows]


def mrc_batch(
    enc: Encoded, rows: Sequence[int], pad_id: int, multiple: int = 1, weights: Sequence[float] | None = None
) -> MrcBatch:
    """MRC rows; `weights` (one per row) scale each row's loss (sampled types: the inverse of the
    probability the row was drawn, so the loss's expectation is the full loss)."""
    records = [enc.mrc[r] for r in rows]
    ids = [m.input_ids for m in records]
    out = MrcBatch(
        input_ids=pad(ids, pad_id, torch.long, multiple),
        attention_mask=pad([[1] * len(x) for x in ids], 0, torch.long, multiple),
        token_type_ids=pad([m.token_type_ids for m in records], 0, torch.long, multiple),
        start_labels=pad([m.start for m in records], 0.0, torch.float, multiple),
        end_labels=pad([m.end for m in records], 0.0, torch.float, multiple),
        label_mask=pad([m.label_mask for m in records], 0, torch.float, multiple),
    )
    if weights is not None:
        out["row_weight"] = torch.tensor(list(weights), dtype=torch.float)
    return out


class LengthGroupedBatches:
    """Batches of window ids (`lengths`: one per window) of similar length, still random each epoch,
    sharded over DDP ranks.

    Shuffle all window ids, cut them into chunks of `batch_size * group` windows, sort each
    chunk by length and cut it into batches, then shuffle the batches. Every window is in
    exactly one batch per epoch; with several ranks, each takes every `world`-th batch, and
    ranks short of a batch repeat one from the start so all ranks take the same number of steps.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, group: int = 50
    ):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.rank, self.world, self.group = rank, world, group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def all_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        window_ids = list(range(len(self.lengths)))
        rng.shuffle(window_ids)
        if self.group <= 0:  # plain random batches
            return [window_ids[b : b + self.batch_size] for b in range(0, len(window_ids), self.batch_size)]
        chunk = self.batch_size * self.group
        batches = []
        for c in range(0, len(window_ids), chunk):
            part = sorted(window_ids[c : c + chunk], key=lambda k: self.lengths[k], reverse=True)
            batches += [part[b : b + self.batch_size] for b in range(0, len(part), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.all_batches()
        per_rank = math.ceil(len(batches) / self.world)
        batches += batches[: per_rank * self.world - len(batches)]
        return iter(batches[self.rank :: self.world])

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.world)


def micro_batches(rows: Sequence[int], lengths: Sequence[int], max_tokens: int, overhead: int = 0) -> list[list[int]]:
    """One optimizer batch's rows as length-sorted micro-batches, longest first; every row in one.

    The split minimises the padded positions the encoder sees plus `overhead` positions per
    micro-batch (what one more forward and backward costs, in positions), with at most
    `max_tokens` padded positions in any micro-batch of more than one row: an exact split of the
    sorted rows by dynamic programming (a batch has tens of rows)."""
    order = sorted(rows, key=lambda r: lengths[r], reverse=True)
    n = len(order)
    cost, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):  # order[i:j] as one micro-batch, padded to its first (longest) row
            size = (j - i) * lengths[order[i]]
            if size > max_tokens and j - i > 1:
                break
            c = cost[i] + overhead + size
            if c < cost[j]:
                cost[j], cut[j] = c, i
    out, j = [], n
    while j > 0:
        out.append(order[cut[j] : j])
        j = cut[j]
    return out[::-1]


def sorted_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Inference batches: longest first, so each batch pads little and memory peaks early.

    A batch holds at most `batch_size` rows and, with `max_tokens`, at most that many padded
    positions (rows x its longest row; a single longer row still gets its own batch)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (
            len(cur) >= batch_size or (max_tokens is not None and (len(cur) + 1) * lengths[cur[0]] > max_tokens)
        ):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out
